"""The dejavu-cache worker: Celery app, pipeline stages and tiers."""
