"""Message contracts shared by producers and workers."""
