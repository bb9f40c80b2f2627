"""The worker: claims environments with due work and does it (postings, expiries, windows)."""
