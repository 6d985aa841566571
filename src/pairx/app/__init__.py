"""The review web app (``pairx review init``, ``pairx serve``); needs ``pip install 'pairx[app]'``.

Modules: :mod:`~pairx.app.project` (projects), :mod:`~pairx.app.search` (exact candidate search),
:mod:`~pairx.app.store` (SQLite, the append-only decision log), :mod:`~pairx.app.cache`
(explanations under content keys), :mod:`~pairx.app.worker` (the background PAIR-X worker),
:mod:`~pairx.app.bundle` (what a page shows of an explanation), :mod:`~pairx.app.views`,
:mod:`~pairx.app.security`, :mod:`~pairx.app.server` (FastAPI) and :mod:`~pairx.app.live` (a
server in a child process, for tests and benchmarks).
"""
