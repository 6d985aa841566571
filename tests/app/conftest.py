"""The review-app tests need the 'app' extra (their fixtures live in tests/conftest.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the review app needs the 'app' extra")
