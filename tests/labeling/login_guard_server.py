"""Settings for the gunicorn that tests/labeling/test_login_guard.py starts: the project's own, with a
password hasher that also appends a line per password check to $PASSWORD_CHECK_LOG, so the test can
count, across worker processes, how many tries reached the password check."""

import os

from django.contrib.auth.hashers import PBKDF2PasswordHasher

from config.settings import *  # noqa: F403


class CountingPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    def verify(self, password: str, encoded: str) -> bool:
        with open(os.environ["PASSWORD_CHECK_LOG"], "a") as log:
            log.write("checked\n")
        return super().verify(password, encoded)


PASSWORD_HASHERS = [f"{__name__}.CountingPBKDF2PasswordHasher"]
