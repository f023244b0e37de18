"""Record: the results database (store, schema) and the capped folders of crops and snapshots beside it."""
