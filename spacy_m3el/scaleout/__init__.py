"""Scale-out: link a corpus into Parquet shards and build entity caches, locally or on Ray.

Nothing here imports Ray at import time; only :mod:`.ray_engine` and
:mod:`.cache_build` do, when the ray engine is chosen.
"""
