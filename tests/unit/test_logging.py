from __future__ import annotations

import json
import logging

import pytest
import structlog

from bot.ops.logs import bind_context, clear_context, configure_logging, mask_secrets_in_text

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_mask_token_shapes() -> None:
    assert TOKEN not in mask_secrets_in_text(f"https://api.telegram.org/bot{TOKEN}/getMe")
    assert "sk-" + "a" * 20 not in mask_secrets_in_text("key sk-" + "a" * 20)
    assert mask_secrets_in_text("user 123456 said hi") == "user 123456 said hi"


def test_json_lines_with_context_and_stdlib_routed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        bind_context(update_id=7, user_id=42)
        structlog.get_logger("t").info("handled", url=f"/bot{TOKEN}/sendMessage", token=TOKEN)
        logging.getLogger("aiogram.dispatcher").warning("failed with %s", TOKEN)
    finally:
        clear_context()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert lines[0]["event"] == "handled"
    assert lines[0]["update_id"] == 7 and lines[0]["user_id"] == 42
    assert lines[1]["logger"] == "aiogram.dispatcher"
    assert lines[1]["update_id"] == 7
    text = json.dumps(lines)
    assert TOKEN not in text
    assert TOKEN.split(":")[1] not in text


def test_exception_tracebacks_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        structlog.get_logger("t").exception("crashed")
    err = capsys.readouterr().err
    assert "crashed" in err and TOKEN not in err
