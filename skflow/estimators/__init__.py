"""The estimators: thin parameter lists over the density trunk (:mod:`.density`) and the meta-estimators."""
