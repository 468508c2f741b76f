"""Django's database backends plus deferred writes before COMMIT (`core.transactions`)."""
