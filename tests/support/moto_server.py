"""moto's server, with the shape of EC2's answers fixed where amazon.aws depends on it.

Run as ``python -m tests.support.moto_server -H 127.0.0.1 -p PORT`` (moto.server's options).
"""

from __future__ import annotations

from typing import Any


def _volumes_always_name_their_snapshot() -> None:
    # EC2's DescribeVolumes always has SnapshotId ("" for a blank volume); moto leaves it out,
    # and amazon.aws.ec2_vol_info then fails with KeyError 'snapshot_id'.
    from moto.ec2.models import elastic_block_store

    original = elastic_block_store.Volume.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.snapshot_id is None:
            self.snapshot_id = ""

    elastic_block_store.Volume.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    _volumes_always_name_their_snapshot()
    main()
