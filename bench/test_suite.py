#!/usr/bin/env python3
"""Self-test for the arithmetic of bench/suite.py (what decides a goal's verdict).

    python3 -m unittest discover -s bench -p 'test_*.py'     # from the repository root
"""

import math
import os
import statistics
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402  (bench/ is not a package)


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


if __name__ == "__main__":
    unittest.main()
