"""The review app's routes, one :class:`fastapi.APIRouter` per concern.

:mod:`~pairx.app.routes.common` holds what they share: the app's state (:class:`AppState`,
on ``app.state.pairx``, handed to a route by the :data:`~pairx.app.routes.common.State`
dependency) and the small response helpers. The routers:

* :mod:`~pairx.app.routes.auth`: the guard every request passes (Host header, reviewer
  token, CSRF, security headers) and ``/login``;
* :mod:`~pairx.app.routes.pages`: the queue ``/``, a query's review ``/q/{position}``, an
  identity's other images ``/identity/{image}``;
* :mod:`~pairx.app.routes.files`: images by database id ``/img/{id}`` and cached
  explanations by content key ``/expl/{key}.jpg|json``;
* :mod:`~pairx.app.routes.decisions`: ``/api/decide`` and ``/api/undo``;
* :mod:`~pairx.app.routes.explain`: explanation jobs and their progress ``/api/explain``,
  and ``/api/health``;
* :mod:`~pairx.app.routes.exports`: ``/export/{name}``.

:func:`pairx.app.server.create_app` assembles them. A new route goes into the router of its
concern (or a new module with its own router, included there), takes the state as
``st: State`` and reads the database through ``st.db()`` and the functions of
:mod:`pairx.app.store` or :mod:`pairx.app.views`, never with SQL of its own.
"""

from __future__ import annotations

from pairx.core.optional import require

require("fastapi", "app", "the review app")
require("jinja2", "app", "the review app")
