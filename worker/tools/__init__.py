"""Worker-side tools behind `dejavu`: status, backfill, eval, calibrate. They need Redis, Postgres and the
embedder, so they live with the workers; the producer side never imports them."""
