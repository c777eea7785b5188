"""A steady request stream from inside a pod's namespace (stdlib only; run with `ip netns exec`).

`python rollout_client.py CONFIG.json`: CONFIG names the requests to cycle through
({"url", "headers"}), the JSON-lines file to append one record per request to, a
stop file, and the pause between requests. Each request opens a new connection, as
a pod calling a Service would. A request fails when it gets no answer, a status other
than 200, or an answer whose own upstream calls (the echo workload's) did not all
return 200.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

TIMEOUT = 5.0


def one_request(url: str, headers: dict[str, str]) -> dict:
    started = time.time()
    record = {"t": started, "url": url, "ok": False}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as answer:
            record["status"], body = answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        record["status"], record["error"] = exc.code, exc.read().decode(errors="replace")[:200]
        return record
    except Exception as exc:  # every way a request can fail is a failed request, never a dead stream
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    upstream = [u.get("status") for u in body.get("upstreams", [])]
    record.update(pod=body.get("pod"), upstream=upstream, ok=record["status"] == 200 and set(upstream) <= {200})
    record["seconds"] = round(time.time() - started, 4)
    return record


def main(config_path: str) -> int:
    with open(config_path) as handle:
        config = json.load(handle)
    with open(config["out"], "a", buffering=1) as out:
        index = 0
        while not os.path.exists(config["stop"]):
            request = config["requests"][index % len(config["requests"])]
            out.write(json.dumps(one_request(request["url"], request.get("headers", {}))) + "\n")
            index += 1
            time.sleep(config.get("pause", 0.02))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
