"""The compute engine: Spark's RDD model (lazy lineage, stages split at shuffles,
sort-based shuffle, locality-aware scheduling) on shoal's executors.

``shoal.spark`` is the PySpark-compatible surface over this package.
"""
