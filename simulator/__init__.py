"""The simulated bank: a deterministic day of canonical events (day.py), and the
same day as the bank's products write it (vendors.py)."""
