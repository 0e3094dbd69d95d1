"""Issue 13.9 in separated mode: the config layout ``install --system`` makes is accepted.

``/etc/aegis/aegisd.toml`` is root:aegis 0640 in a root:aegis 0750 directory: the daemon's
account may read it through its group but nobody but root may write it, which is exactly what
``trusted_file`` asks. The same file made group-writable is refused. The daemon runs as a
throwaway account (``foreign.py``) in a throwaway group standing in for ``aegis``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from tests.corekit import Files, write_config
from tests.crossuid.foreign import (
    Account,
    ForeignDaemon,
    daemon_argv,
    shared_root,
    throwaway_group,
)


def test_the_separated_config_layout_is_accepted_and_a_writable_one_refused(
    daemon_user: Account, venv_python: Path, foreign_daemons: list[ForeignDaemon]
) -> None:
    etc = Path(tempfile.mkdtemp(prefix="aegetc", dir="/tmp"))  # stands in for /etc/aegis
    try:
        with shared_root(daemon_user) as root, throwaway_group("a") as (_, gid):
            os.chown(etc, 0, gid)
            etc.chmod(0o750)
            made = write_config(root)
            config = etc / "aegisd.toml"
            shutil.move(made.config, config)
            os.chown(config, 0, gid)
            config.chmod(0o640)
            files: Files = dataclasses.replace(made, config=config)
            argv = [*daemon_user.prefix(gid), *daemon_argv(venv_python, config)]

            d = ForeignDaemon(files, argv=argv, env={})
            foreign_daemons.append(d)
            d.start()  # READY: root:aegis 0640 is accepted
            assert d.stop() == 0

            config.chmod(0o660)  # now the whole group could rewrite the policy
            refused = ForeignDaemon(files, argv=argv, env={})
            foreign_daemons.append(refused)
            refused.launch()
            assert refused.wait_exit() == 78
            assert f"{config}: the config is group-writable (mode 0660)" in refused.stderr()
    finally:
        shutil.rmtree(etc, ignore_errors=True)
