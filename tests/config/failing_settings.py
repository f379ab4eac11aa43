"""The product's settings with one view that fails, for the plain-500 check (tests only)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.config.failing_urls"
