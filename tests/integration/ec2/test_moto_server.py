"""The shared moto server keeps answering however much it logs.

It logs a line per request; in a pipe that nobody reads it would block once the pipe is
full (about 64 KiB, some 800 requests), and every later AWS call of every test with it.
"""

from __future__ import annotations

import requests

REQUESTS = 2500


def test_the_shared_server_answers_after_thousands_of_requests(moto_session) -> None:
    with requests.Session() as session:
        for number in range(REQUESTS):
            # A cheap request that changes nothing (a GET there is refused with 400), with
            # a short timeout: a server blocked on its log never answers.
            answer = session.get(f"{moto_session.url}/moto-api/reset-auth", timeout=10)
            assert answer.status_code == 400, (number, answer.status_code)
    regions = moto_session.client("ec2").describe_regions()["Regions"]
    assert "us-east-1" in {r["RegionName"] for r in regions}
    # The log went somewhere that is read or grows freely: well past a pipe's 64 KiB.
    assert moto_session.log is not None and moto_session.log.stat().st_size > 64 * 1024
