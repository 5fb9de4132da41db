"""``ragate conversations`` over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from gateway.cli import main
from gateway.conversations.models import Conversation, now
from gateway.conversations.sqlite import SqliteConversationStore


def seed(db: Path) -> str:
    async def go() -> str:
        store = await SqliteConversationStore(db).open()
        c = await store.create(Conversation("conv_cli", "alice", now(), {"persona": "p"}))
        await store.append_turn(c.id, [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "hello"}])
        await store.close()
        return c.id
    return asyncio.run(go())


def test_list_show_export_delete(tmp_path: Path) -> None:
    config = tmp_path / "ragate.yaml"
    config.write_text(yaml.safe_dump({"server": {"data_dir": str(tmp_path)},
                                      "local_backends": []}))
    cid = seed(tmp_path / "conversations.db")
    runner = CliRunner()
    listed = runner.invoke(main, ["conversations", "list", "-c", str(config)])
    assert listed.exit_code == 0 and cid in listed.output and "alice" in listed.output
    shown = runner.invoke(main, ["conversations", "show", cid, "-c", str(config)])
    assert "user: hi" in shown.output and "assistant: hello" in shown.output
    exported = runner.invoke(main, ["conversations", "export", cid, "-c", str(config)])
    data = json.loads(exported.output)
    assert [i["content"] for i in data["items"]] == ["hi", "hello"]
    deleted = runner.invoke(main, ["conversations", "delete", cid, "--yes", "-c", str(config)])
    assert f"{cid}: deleted" in deleted.output
    missing = runner.invoke(main, ["conversations", "show", cid, "-c", str(config)])
    assert missing.exit_code == 1 and "not found" in missing.output
