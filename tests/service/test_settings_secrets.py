"""Settings errors name the setting and never print the values (admin token, Redis
password): pydantic's own message echoes the whole input for model-level errors."""

from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings

SECRETS = {"ROCKETRANK_ADMIN_TOKEN": "tok-S3CRET", "ROCKETRANK_REDIS_URL": "redis://:hunter2@h/0"}


@pytest.mark.parametrize(
    "bad",
    [
        {"ROCKETRANK_COARSE_MODEL": "", "ROCKETRANK_FINE_MODEL": ""},  # model-level error
        {"ROCKETRANK_WORKERS": "0"},  # field-level error
        {"ROCKETRANK_MAX_TOP_K": "1", "ROCKETRANK_DEFAULT_TOP_K": "5"},
    ],
    ids=["no-stage", "workers", "top-k"],
)
def test_settings_errors_never_print_secrets(monkeypatch, tmp_path, bad):
    for key, value in {**SECRETS, "ROCKETRANK_REPO": str(tmp_path), **bad}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert "tok-S3CRET" not in message and "hunter2" not in message
    assert "input_value" not in message
    assert info.value.__cause__ is None  # the pydantic error (with the inputs) is not chained
