#!/usr/bin/env python3
"""Self-test for the arithmetic of bench/suite.py (what decides a goal's verdict), its report
and its nginx baseline.

    python3 -m unittest discover -s bench -p 'test_*.py'     # from the repository root
"""

import math
import os
import statistics
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402  (bench/ is not a package)


class PercentileTest(unittest.TestCase):
    def test_nearest_rank(self):
        values = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
        self.assertEqual(suite.percentile(values, 0.5), 0.05)
        self.assertEqual(suite.percentile(values, 0.99), 0.099)
        self.assertEqual(suite.percentile(values, 1.0), 0.1)
        self.assertEqual(suite.percentile([0.2], 0.99), 0.2)
        # One slow request in a hundred is the 100th value, not the 99th percentile's.
        self.assertEqual(suite.percentile([0.001] * 99 + [0.5], 0.99), 0.001)


class OneConnectionTest(unittest.TestCase):
    """`Wrk.run` at one connection goes to h2load, whose per-request log must add up."""

    def test_h2load_against_a_local_server(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = body == b'{"a": 1}' and self.headers["Authorization"] == "Bearer t0k"
                answer = b"{}"
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                wrk = suite.Wrk("1s", Path(tmp))
                script = wrk.script("t", "POST", '{"a": 1}')
                url = f"http://127.0.0.1:{server.server_port}/x"
                r = wrk.run(url, 1, script, "t0k")
                self.assertGreater(r["rps"], 0)
                self.assertTrue(0 < r["p50"] <= r["p90"] <= r["p99"], r)
                # A refused request (a wrong token: 400) fails the run instead of counting.
                with self.assertRaises(RuntimeError):
                    wrk.run(url, 1, script, "wrong")
        finally:
            server.shutdown()


class PairedRatioTest(unittest.TestCase):
    def test_geometric_mean_and_interval(self):
        ratios = [0.9, 1.0, 1.1, 0.95, 1.05]
        s = suite.paired_ratio_summary(ratios)
        logs = [math.log(r) for r in ratios]
        mean, sd = statistics.mean(logs), statistics.stdev(logs)
        half = 2.78 * sd / math.sqrt(5)  # t(0.975, df=4)
        self.assertEqual(s["n"], 5)
        self.assertAlmostEqual(s["geomean"], math.exp(mean))
        self.assertAlmostEqual(s["low"], math.exp(mean - half))
        self.assertAlmostEqual(s["high"], math.exp(mean + half))
        self.assertLess(s["low"], s["geomean"])
        self.assertLess(s["geomean"], s["high"])

    def test_interval_narrows_with_more_samples(self):
        few = suite.paired_ratio_summary([0.9, 1.1] * 2)
        many = suite.paired_ratio_summary([0.9, 1.1] * 20)
        self.assertLess(many["high"] - many["low"], few["high"] - few["low"])

    def test_identical_samples_have_no_spread(self):
        s = suite.paired_ratio_summary([0.97] * 8)
        self.assertAlmostEqual(s["low"], 0.97)
        self.assertAlmostEqual(s["high"], 0.97)

    def test_large_samples_use_the_normal_quantile(self):
        ratios = [0.9, 1.1] * 40
        s = suite.paired_ratio_summary(ratios)
        logs = [math.log(r) for r in ratios]
        half = 1.96 * statistics.stdev(logs) / math.sqrt(len(logs))
        self.assertAlmostEqual(math.log(s["high"]) - math.log(s["geomean"]), half)

    def test_one_sample_has_no_interval(self):
        s = suite.paired_ratio_summary([1.02])
        self.assertEqual(s["geomean"], 1.02)
        self.assertTrue(math.isnan(s["low"]) and math.isnan(s["high"]))


class IntervalVerdictTest(unittest.TestCase):
    def test_the_whole_interval_decides(self):
        self.assertEqual(suite.interval_verdict({"low": 0.96, "high": 1.02}, 0.95), "met")
        self.assertEqual(suite.interval_verdict({"low": 0.90, "high": 0.94}, 0.95), "missed")
        self.assertEqual(suite.interval_verdict({"low": 0.94, "high": 1.02}, 0.95), "not decided at this precision")

    def test_no_interval_decides_nothing(self):
        nan = float("nan")
        self.assertEqual(suite.interval_verdict({"low": nan, "high": nan}, 0.95), "not decided at this precision")


class TimesTest(unittest.TestCase):
    def test_counts_in_words(self):
        self.assertEqual([suite.times(n) for n in (0, 1, 2, 11)], ["no times", "once", "2 times", "11 times"])


class CheckNumbersTest(unittest.TestCase):
    def test_accepts_finite_numbers_and_strings(self):
        suite.check_numbers({"a": 1, "b": [0.5, 2.0], "c": {"d": "text"}})

    def test_refuses_what_is_not_a_measurement(self):
        for bad in ({"a": float("nan")}, {"a": float("inf")}, {"a": -1}, {"a": []}, {}):
            with self.assertRaises(AssertionError, msg=bad):
                suite.check_numbers(bad)


class WrkTotalsTest(unittest.TestCase):
    OUT = """Running 2s test @ http://127.0.0.1:1/v1/x:encrypt
  2 threads and 64 connections
  Latency Distribution
     50%    1.00ms
  12345 requests in 2.00s, 3.00MB read
  Non-2xx or 3xx responses: 12000
Requests/sec:   6172.50
"""

    def test_counts_requests_and_refusals(self):
        self.assertEqual(suite.wrk_totals(self.OUT), {"requests": 12345, "non2xx": 12000})

    def test_no_refusals_line_means_none(self):
        out = "\n".join(l for l in self.OUT.splitlines() if "Non-2xx" not in l)
        self.assertEqual(suite.wrk_totals(out)["non2xx"], 0)

    def test_output_without_a_count_is_an_error(self):
        with self.assertRaises(ValueError):
            suite.wrk_totals("Requests/sec: 1\n")


def nginx_unescape(quoted: str) -> str:
    """What nginx's configuration parser makes of a single-quoted string."""
    assert quoted[0] == quoted[-1] == "'"
    out, i, s = [], 0, quoted[1:-1]
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in "\"'\\tnr":
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


class NginxConfTest(unittest.TestCase):
    def test_the_answer_survives_quoting(self):
        for text in (suite.NGINX_ANSWER, "it's {\"a\": \"b\\\\c\"}\n\ttab"):
            quoted = suite.nginx_conf_string(text)
            self.assertNotIn("\n", quoted)
            self.assertEqual(nginx_unescape(quoted), text)

    def test_a_variable_is_refused(self):
        with self.assertRaises(ValueError):
            suite.nginx_conf_string('{"a": "$host"}')

    def test_the_answer_is_keyholds_encrypt_answer_size(self):
        self.assertEqual(len(suite.NGINX_ANSWER.encode()), 272)

    def test_everything_nginx_writes_is_under_the_prefix(self):
        conf = suite.nginx_conf(Path("/tmp/p"), 4321, 3, "{}", without=("uwsgi",))
        self.assertIn("listen 127.0.0.1:4321;", conf)
        self.assertIn("worker_processes 3;", conf)
        self.assertIn("access_log off;", conf)
        self.assertIn('pid "/tmp/p/nginx.pid";', conf)
        self.assertIn('error_log "/tmp/p/error.log" warn;', conf)
        for m in ("client_body", "proxy", "fastcgi", "scgi"):
            self.assertIn(f'{m}_temp_path "/tmp/p/tmp/{m}";', conf)
        self.assertNotIn("uwsgi", conf)
        self.assertIn("keepalive_timeout 60s;", conf)

    def test_nginx_answers_and_stops(self):
        with suite.Nginx() as ng:
            req = urllib.request.Request(ng.base + "/v1/x:encrypt", data=b'{"plaintext": ""}', method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertEqual(r.headers["Content-Type"], "application/json; charset=UTF-8")
                self.assertEqual(r.read().decode(), suite.NGINX_ANSWER)
            pgid, prefix = ng.proc.pid, ng.prefix
        self.assertIsNotNone(ng.proc.poll())
        left = subprocess.run(["ps", "-o", "pid=", "--sid", str(pgid)], capture_output=True, text=True).stdout.split()
        self.assertEqual(left, [], "nginx processes left running")
        self.assertFalse(prefix.exists())


def wrk_row(rps, p99=0.002):
    return {"rps": rps, "p50": p99 / 2, "p90": p99 * 0.8, "p99": p99}


class ReportTest(unittest.TestCase):
    class Ctx:
        machine, commit, command, duration = "2 cores", "abc1234", "bash bench/run.sh", "5s"

    def setUp(self):
        self._dir = tempfile.TemporaryDirectory()
        self.plots = Path(self._dir.name)

    def tearDown(self):
        self._dir.cleanup()

    def test_kms_ratios_to_health_and_nginx(self):
        rows = {}
        for c in (1, 64):
            rows[f"health-c{c}"] = wrk_row(40000.0 if c == 64 else 20000.0, 0.0001)
            rows[f"nginx-c{c}"] = wrk_row(50000.0 if c == 64 else 25000.0, 0.0001)
            rows[f"encrypt-32B-c{c}"] = wrk_row(30000.0 if c == 64 else 2000.0, 0.0009)
            rows[f"decrypt-32B-c{c}"] = wrk_row(20000.0 if c == 64 else 2000.0, 0.0012)
        results = {"kms": {"rows": rows, "connections": [1, 64], "nginx": "nginx/1.22.1", "nginx_workers": 2}}
        text = suite.report(results, self.Ctx(), self.plots)
        self.assertIn("| scenario | requests/s | p50 | p99 | ratio to health check | ratio to nginx |", text)
        self.assertIn("| encrypt-32B-c64 | 30000 | 450 µs | 900 µs | 0.75 | 0.60 |", text)
        self.assertIn("| nginx-c64 | 50000 | 50 µs | 100 µs | 1.25 | 1.00 |", text)
        self.assertIn("≥ 0.60 of the health check: 0.75, met", text)
        self.assertIn("≥ 0.50 of nginx: `:encrypt` 0.60, met; `:decrypt` 0.40, **missed**", text)
        self.assertIn("< 1 ms: `:encrypt` 900 µs, met; `:decrypt` 1.20 ms, **missed**", text)
        self.assertTrue((self.plots / "throughput-vs-connections.svg").exists())

    def test_durability_goals_to_nginx(self):
        rows = {}
        for storage, enc, dec in (("file", 24000.0, 26000.0), ("journal", 27000.0, 25500.0), ("memory", 31000.0, 29000.0)):
            for c in (1, 64):
                rows[f"{storage}-health-c{c}"] = wrk_row(40000.0)
                rows[f"{storage}-nginx-c{c}"] = wrk_row(50000.0)
                rows[f"{storage}-encrypt-c{c}"] = wrk_row(enc)
                rows[f"{storage}-decrypt-c{c}"] = wrk_row(dec)
        results = {"durability": {"rows": rows, "nginx": "nginx/1.22.1", "nginx_workers": 2}}
        text = suite.report(results, self.Ctx(), self.plots)
        self.assertIn("| memory | 64 | `:encrypt` | 31000 | 1.00 ms | 2.00 ms | 0.78 | 0.62 |", text)
        self.assertIn("| file | 1 | nginx | 50000 | 1.00 ms | 2.00 ms | 1.25 | 1.00 |", text)
        self.assertIn("| file | 1 | health check | 40000 | 1.00 ms | 2.00 ms | 1.00 | 0.80 |", text)
        self.assertIn("- `--audit-sync strict` ≥ 0.50: `:encrypt` 0.48, **missed**; `:decrypt` 0.52, met;", text)
        self.assertIn("- default server (journal, 100 ms) ≥ 0.50: `:encrypt` 0.54, met; `:decrypt` 0.51, met;", text)
        self.assertIn("- `--in-memory` ≥ 0.60: `:encrypt` 0.62, met; `:decrypt` 0.58, **missed**.", text)
        self.assertIn("| journal | 64 | `:decrypt` | 25500 |", text)
        self.assertIn("Goal: p99 at one connection < 1 ms:\n- file: `:encrypt` 2.00 ms, **missed**", text)

    def test_purposes_ratios_to_encrypt(self):
        rows = {}
        for c in (1, 64):
            for op, rps in (("encrypt", 20000.0), ("sign-p256", 15000.0), ("sign-rsa2048", 2000.0),
                            ("mac-sha256", 19000.0), ("decrypt-oaep2048", 1000.0)):
                rows[f"{op}-c{c}"] = wrk_row(rps if c == 64 else rps / 10, 0.0005)
        text = suite.report({"purposes": {"rows": rows}}, self.Ctx(), self.plots)
        self.assertIn("| `:asymmetricSign` RSA-2048 | 64 | 2000 | 250 µs | 500 µs | 0.10 |", text)
        self.assertIn("| `:macSign` HMAC-SHA256 | 1 | 1900 | 250 µs | 500 µs | 0.95 |", text)
        self.assertIn("| `:encrypt` 32 B | 64 | 20000 | 250 µs | 500 µs | 1.00 |", text)

    def test_scale_rounds_pair_each_spread_run_with_its_own_one_key_run(self):
        # Three rounds: one key at 40,000 then 44,000 then 42,000; spread 0.95, 0.85, 0.90 of it.
        rounds = []
        for order, one, spread, change in zip(suite.scale_orders(3), (40000.0, 44000.0, 42000.0),
                                              (0.95, 0.85, 0.90), (0.80, 0.82, 0.84)):
            runs = {"one key": wrk_row(one), "spread": wrk_row(one * spread),
                    "spread, one change a second": wrk_row(one * change)}
            for r in runs.values():
                r["ratio_to_one_key"] = r["rps"] / one
            rounds.append({"order": list(order), "runs": runs})
        sc = {"keys": 20000, "connections": 64, "create_s": 18.0, "changes": 15, "health": wrk_row(130000.0),
              "rounds": rounds, "summary": suite.scale_summary(rounds), "rss_peak_kib": 200 * 1024}
        spread = sc["summary"]["spread"]
        self.assertAlmostEqual(spread["geomean"], (0.95 * 0.85 * 0.90) ** (1 / 3))
        self.assertEqual(spread["verdict"], "not decided at this precision")
        self.assertEqual(sc["summary"]["spread, one change a second"]["verdict"], "missed")
        text = suite.report({"scale": sc}, self.Ctx(), self.plots)
        self.assertIn("| 1 | one, spread, change | 40000 | 38000 (0.95) | 32000 (0.80) |", text)
        self.assertIn("| 2 | spread, change, one | 44000 | 37400 (0.85) | 36080 (0.82) |", text)
        self.assertIn("| 3 | change, one, spread | 42000 | 37800 (0.90) | 35280 (0.84) |", text)
        self.assertIn(f"- spread: {spread['geomean']:.3f}, 95% interval {spread['low']:.3f}-{spread['high']:.3f}, "
                      "**not decided at this precision**;", text)
        self.assertIn("- spread, one change a second: 0.820, 95% interval", text)
        self.assertTrue(text.rstrip().endswith("**missed**."), text[-200:])

    def test_scale_orders_rotate_every_run_through_every_place(self):
        orders = suite.scale_orders(3)
        for place in range(3):
            self.assertEqual(sorted(o[place] for o in orders), sorted(suite.SCALE_RUNS))
        self.assertEqual(suite.scale_orders(4)[3], suite.SCALE_RUNS)

    def test_one_scale_round_decides_on_its_ratio_alone(self):
        runs = {"one key": wrk_row(100.0), "spread": wrk_row(91.0), "spread, one change a second": wrk_row(89.0)}
        for r in runs.values():
            r["ratio_to_one_key"] = r["rps"] / 100.0
        summary = suite.scale_summary([{"order": list(suite.SCALE_RUNS), "runs": runs}])
        self.assertEqual(summary["spread"]["verdict"], "met (one round)")
        self.assertEqual(summary["spread, one change a second"]["verdict"], "missed (one round)")
        self.assertNotIn("low", summary["spread"])
        suite.check_numbers(summary)  # what --smoke asks of every result: no NaN bounds


if __name__ == "__main__":
    unittest.main()
