from __future__ import annotations

import json
import logging

import pytest
import structlog

from bot.ops.logs import (
    bind_context,
    bind_update,
    clear_context,
    configure_logging,
    mask_secrets_in_text,
    reset_update,
)

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


def test_update_ids_on_every_line_while_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """What the context middleware binds per update: structlog and stdlib lines carry the ids,
    and nothing does once the update is over."""
    configure_logging("INFO", "json")
    token = bind_update(11, None)
    inner = bind_update(12, 34)
    try:
        structlog.get_logger("t").info("inner")
        logging.getLogger("aiogram.dispatcher").warning("inner stdlib")
    finally:
        reset_update(inner)
    structlog.get_logger("t").info("outer", user_id=99)  # an explicit value wins
    reset_update(token)
    structlog.get_logger("t").info("after")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert [(x.get("update_id"), x.get("user_id")) for x in lines] == [
        (12, 34),
        (12, 34),
        (11, 99),
        (None, None),
    ]


def test_exception_tracebacks_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        structlog.get_logger("t").exception("crashed")
    err = capsys.readouterr().err
    assert "crashed" in err and TOKEN not in err


def test_console_tracebacks_never_show_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console: a traceback is rendered to plain text before masking (rich's pretty
    tracebacks would print local variables, a token or a Bot API URL among them, unmasked)."""
    configure_logging("INFO", "console")
    try:

        def call_api() -> None:
            url = f"https://api.telegram.org/bot{TOKEN}/getMe"
            raise RuntimeError(f"failed: {url}")

        try:
            call_api()
        except RuntimeError:
            structlog.get_logger("t").exception("call_failed", token=TOKEN)
    finally:
        configure_logging("INFO", "json")
    err = capsys.readouterr().err
    assert "call_failed" in err and "RuntimeError" in err
    assert TOKEN.split(":")[1] not in err
