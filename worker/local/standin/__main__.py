"""`python -m worker.local.standin`: serve the stand-in LLM (serve.main's flags)."""

from worker.local.standin.serve import main

main()
