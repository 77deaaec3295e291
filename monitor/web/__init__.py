"""The status page, the per-target pages and the badges: server-rendered HTML and SVG.

`monitor.server` routes to `routes.add_status_routes`. Nothing here imports the server or
the daemon: the daemon answers through `view.StatusView`. No JavaScript build, no CDN: the
pages are whole documents that work offline.
"""
