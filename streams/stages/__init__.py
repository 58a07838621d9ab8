"""The stages' runtime: a stage's engines and how it judges a record
(runner.py), a partition's stores and their changelog writes (store.py), a
partition's event clock (clock.py), and compatibility with the pinned Faust
(faust_compat.py)."""
