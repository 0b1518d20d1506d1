"""Factor embeddings of a trained model per (date, stock): the HDF5 store and its export from a qrun run."""

from storm_bt.factors.store import EMBEDDINGS, FactorStore, FactorStoreError, write_factor_store

__all__ = ["EMBEDDINGS", "FactorStore", "FactorStoreError", "write_factor_store"]
