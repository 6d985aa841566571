"""The review web app (``pairx review init``, ``pairx serve``); needs ``pip install 'pairx[app]'``.

Modules: :mod:`~pairx.app.project` (projects), :mod:`~pairx.app.search` (exact candidate search),
:mod:`~pairx.app.store` (SQLite, the append-only decision log; every SQL statement of the app
but the page queries of :mod:`~pairx.app.views`), :mod:`~pairx.app.cache` (explanations under
content keys), :mod:`~pairx.app.worker` (the background PAIR-X worker and its job queue),
:mod:`~pairx.app.bundle` and :mod:`~pairx.app.amd` (what a page shows of an explanation),
:mod:`~pairx.app.thumbs`, :mod:`~pairx.app.security`, :mod:`~pairx.app.routes` (the FastAPI
routers, one per concern), :mod:`~pairx.app.server` (the app that assembles them) and
:mod:`~pairx.app.live` (a server in a child process, for tests and benchmarks).
"""
