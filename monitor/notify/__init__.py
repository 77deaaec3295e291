"""Notifications: channels behind one small interface, rendering, delivery, maintenance.

`base` (message, error, interface, secrets), `messages` (rendering and templates),
`channel` (the shared base class and HTTP helper), one module per channel, `registry`
(config → notifiers), `sender` (the delivery loop over a persisted outbox), `maintenance`
(windows when nothing is sent). Nothing is imported here, so `monitor.notify.base` stays
cheap to import (the registry pulls in every channel, Apprise included).

This package imports monitor.timefmt (and the version from `monitor`) at most: never the
store, config, metrics or app. monitor.config builds notifiers and windows to validate
them, so an import the other way would be a cycle (tests/test_notify_config.py checks).
"""
