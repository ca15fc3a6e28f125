"""Feature stores: the interface, the embedded (Parquet) store and the Redis store."""

from service.feature_store.base import FeatureStore, FeatureStoreError, ItemTable, UserLookup

__all__ = ["FeatureStore", "FeatureStoreError", "ItemTable", "UserLookup"]
