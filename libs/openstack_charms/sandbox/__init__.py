"""The sandbox: a bundle deployed on this machine without Juju, through our charms.

``python -m openstack_charms.sandbox up`` (``tox -e sandbox``) deploys
bundles/openstack.yaml: each unit of ours runs its charm in ops.testing, in a
pod of its own (a network namespace with its own address, a mount namespace
per container), and everything the charm asks of Pebble is done for real with
the pinned OpenStack release; the charms we do not write are stood in by real
software (MariaDB, RabbitMQ, HAProxy, a CA). The functional tests bring up
their clouds through the same :class:`~.cloud.Cloud`.

Not shipped in the charms (it needs ops.testing), like :mod:`openstack_charms.testing`.
"""
