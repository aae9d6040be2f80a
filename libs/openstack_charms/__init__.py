"""Shared library of the OpenStack charm collection.

A charm of the collection is a declaration over this package: it names its
config class, its relation handlers and its workload (containers, services,
files, bootstrap commands); the base classes run one idempotent reconcile for
every event and turn whatever is not ready into one precise status.

Modules are imported lazily by the charms that need them, so that a hook pays
only for what it uses.
"""
