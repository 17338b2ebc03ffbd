#!/usr/bin/env python3
"""Self-test for bench/plot.py.

    python3 -m unittest bench/test_plot.py     # from the repository root
    python3 bench/test_plot.py
"""

import math
import os
import sys
import tempfile
import unittest
import warnings
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402  (bench/ is not a package)

NS = "{http://www.w3.org/2000/svg}"


class PlotTest(unittest.TestCase):
    def setUp(self):
        self._dir = tempfile.TemporaryDirectory()
        self.dir = self._dir.name

    def tearDown(self):
        self._dir.cleanup()

    def path(self, name="chart.svg"):
        return os.path.join(self.dir, name)

    def parse(self, path):
        """The chart as an element tree; fails the test if it is not well-formed XML."""
        root = ET.parse(path).getroot()
        self.assertEqual(root.tag, NS + "svg")
        return root

    def texts(self, root):
        return ["".join(t.itertext()) for t in root.iter(NS + "text")]

    def find(self, root, tag, cls=None):
        """Elements by tag (None: any) and class."""
        return [e for e in root.iter(None if tag is None else NS + tag)
                if cls is None or e.get("class") == cls]

    @staticmethod
    def read(path, mode="r"):
        with open(path, mode) as f:
            return f.read()

    # ------------------------------------------------------------ line charts

    def test_line_chart(self):
        series = {"SOFTWARE": [(1, 10.0), (2, 18.5), (4, 30.0)],
                  "HSM": [(1, 4.0), (2, 5.0), (4, 5.5)],
                  "EXTERNAL": [(1, 3.0), (4, 9.0)]}
        p = self.path()
        self.assertEqual(plot.line_chart(p, "Throughput", "connections", "requests/s", series,
                                         note="machine, commit, command"), p)
        root = self.parse(p)
        self.assertEqual(root.get("width"), "720")
        self.assertEqual(root.get("height"), "400")
        texts = self.texts(root)
        for s in ["Throughput", "connections", "requests/s", "machine, commit, command",
                  *series]:
            self.assertIn(s, texts)
        self.assertEqual(len(self.find(root, "polyline")), len(series))
        self.assertEqual(len(self.find(root, None, "marker")) - len(series),  # minus legend
                         sum(len(v) for v in series.values()))

    def test_line_points_inside_plot_and_sorted(self):
        p = plot.line_chart(self.path(), "t", "x", "y",
                            {"a": [(3, 7.0), (1, -2.0), (2, 130.0)]}, y_from_zero=False)
        (line,) = self.find(self.parse(p), "polyline")
        pts = [tuple(map(float, xy.split(","))) for xy in line.get("points").split()]
        self.assertEqual(len(pts), 3)
        self.assertEqual([x for x, _ in pts], sorted(x for x, _ in pts))
        for x, y in pts:
            self.assertTrue(0 <= x <= 720 and 0 <= y <= 400, (x, y))

    def test_line_log_x_ticks_at_data(self):
        xs = [1, 4, 16, 64]
        p = plot.line_chart(self.path(), "t", "x", "y", {"a": [(x, x * 2.0) for x in xs]},
                            log_x=True)
        texts = self.texts(self.parse(p))
        for x in xs:
            self.assertIn(str(x), texts)
        # Equal ratios are equal distances on a log axis.
        (line,) = self.find(self.parse(p), "polyline")
        px = [float(xy.split(",")[0]) for xy in line.get("points").split()]
        gaps = [b - a for a, b in zip(px, px[1:])]
        self.assertAlmostEqual(min(gaps), max(gaps), delta=0.05)

    def test_line_many_series_distinct_colours(self):
        series = {f"s{i}": [(0, i), (1, i + 1)] for i in range(8)}
        root = self.parse(plot.line_chart(self.path(), "t", "x", "y", series))
        colours = [e.get("stroke") for e in self.find(root, "polyline")]
        self.assertEqual(len(set(colours)), 8)

    # ------------------------------------------------------------ bar charts

    def test_bar_chart(self):
        cats = ["1 connection", "64 connections", "256 connections"]
        series = {"SOFTWARE": [0.93, 0.86, 0.8], "HSM": [0.41, 0.22, 0.1]}
        p = self.path()
        self.assertEqual(plot.bar_chart(p, "Ratio to /healthz", "ratio", cats, series,
                                        note="n", reference=(0.8, "goal 0.80")), p)
        root = self.parse(p)
        self.assertEqual(len(self.find(root, "rect", "bar")), len(cats) * len(series))
        texts = self.texts(root)
        for s in ["Ratio to /healthz", "ratio", "goal 0.80", *cats, *series]:
            self.assertIn(s, texts)
        # Value labels carry three significant digits.
        for s in ["0.930", "0.860", "0.800", "0.410", "0.220", "0.100"]:
            self.assertIn(s, texts)
        dashed = [e for e in self.find(root, "line") if e.get("stroke-dasharray")]
        self.assertEqual(len(dashed), 1)

    def test_bar_heights_proportional(self):
        root = self.parse(plot.bar_chart(self.path(), "t", "y", ["a", "b"],
                                         {"s": [10.0, 40.0]}))
        h = [float(r.get("height")) for r in self.find(root, "rect", "bar")]
        self.assertAlmostEqual(h[1], 4 * h[0], places=1)

    def test_bar_length_mismatch(self):
        with self.assertRaises(ValueError):
            plot.bar_chart(self.path(), "t", "y", ["a", "b"], {"s": [1.0]})

    def test_bar_missing_value_leaves_gap(self):
        root = self.parse(plot.bar_chart(self.path(), "t", "y", ["a", "b", "c"],
                                         {"s": [1.0, None, float("nan")], "u": [2, 3, 4]}))
        self.assertEqual(len(self.find(root, "rect", "bar")), 4)

    # ------------------------------------------------------------ text and files

    def test_escaping(self):
        nasty = 'a<b & "c">d'
        p = plot.line_chart(self.path("l.svg"), nasty, nasty + "x", nasty + "y",
                            {nasty: [(1, 2)]}, note=nasty)
        raw = self.read(p)
        self.assertIn("a&lt;b &amp; &quot;c&quot;&gt;d", raw)
        self.assertNotIn(nasty, raw)
        texts = self.texts(self.parse(p))
        for s in [nasty, nasty + "x", nasty + "y"]:
            self.assertIn(s, texts)
        p = plot.bar_chart(self.path("b.svg"), nasty, nasty, [nasty], {nasty: [1]},
                           note=nasty, reference=(0.5, nasty))
        self.assertIn(nasty, self.texts(self.parse(p)))
        # Control characters are not allowed in XML at all, even escaped: they are dropped.
        p = plot.bar_chart(self.path("c.svg"), "bell\x07", "y", ["a\udc80"], {"s\x00": [1]})
        self.assertIn("bell", self.texts(self.parse(p)))
        # Non-ASCII text is kept as it is.
        p = plot.line_chart(self.path("u.svg"), "latency µs · 1–64", "x", "y", {"Ωmega": []})
        self.assertIn("latency µs · 1–64", self.texts(self.parse(p)))

    def test_size_and_atomic_write(self):
        p = self.path("sub/dir/c.svg")
        plot.bar_chart(p, "t", "y", ["a"], {"s": [1]}, width=300, height=200)
        root = self.parse(p)
        self.assertEqual((root.get("width"), root.get("height")), ("300", "200"))
        self.assertEqual(os.listdir(os.path.dirname(p)), ["c.svg"])  # no temp file left
        plot.bar_chart(p, "t2", "y", ["a"], {"s": [1]})  # replaces the existing file
        self.assertIn("t2", self.texts(self.parse(p)))
        with self.assertRaises(ValueError):
            plot.line_chart(p, "t", "x", "y", {}, width=0)

    def test_deterministic(self):
        a = self.read(plot.line_chart(self.path("a.svg"), "t", "x", "y",
                                      {"s": [(1, 2), (3, 4)]}), "rb")
        b = self.read(plot.line_chart(self.path("b.svg"), "t", "x", "y",
                                      {"s": [(1, 2), (3, 4)]}), "rb")
        self.assertEqual(a, b)

    # ------------------------------------------------------------ edge cases

    def test_line_edge_cases(self):
        cases = [
            dict(series={}),
            dict(series={"empty": []}),
            dict(series={"one": [(5, 3)]}),
            dict(series={"zero point": [(0, 0)]}),
            dict(series={"zeros": [(0, 0), (1, 0), (2, 0)]}),
            dict(series={"equal": [(1, 7), (2, 7)]}, y_from_zero=False),
            dict(series={"same x": [(2, 1), (2, 5)]}),
            dict(series={"negative": [(-5, -1e9), (5, -2e9)]}),
            dict(series={"tiny": [(1e-9, 1e-12), (2e-9, 3e-12)]}),
            dict(series={"huge": [(1e15, 1e18), (2e15, 3e18)]}),
            dict(series={"nan": [(1, float("nan")), (float("inf"), 2), (3, 4)]}),
            dict(series={"log one": [(64, 1.5)]}, log_x=True),
            dict(series={"log empty": []}, log_x=True),
            dict(series={"log equal": [(8, 1), (8, 2)]}, log_x=True, y_from_zero=False),
            dict(series={"log many": [(2 ** i, i) for i in range(40)]}, log_x=True),
            dict(series={"log fractions": [(0.001, 1), (0.5, 2), (1000, 3)]}, log_x=True),
        ]
        for i, case in enumerate(cases):
            with self.subTest(case=case):
                root = self.parse(plot.line_chart(self.path(f"l{i}.svg"), "edge", "x", "y",
                                                  **case))
                for name, pts in case["series"].items():
                    self.assertIn(name, self.texts(root))
                for e in root.iter():
                    for k, v in e.attrib.items():
                        self.assertNotIn("nan", v.lower(), (e.tag, k))
                        self.assertNotIn("inf", v.lower(), (e.tag, k))

    def test_log_x_drops_nonpositive_with_warning(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            root = self.parse(plot.line_chart(self.path(), "t", "x", "y",
                                              {"a": [(0, 1), (-1, 2), (4, 3)]}, log_x=True))
        self.assertEqual(len(w), 2)
        (line,) = self.find(root, "polyline")
        self.assertEqual(len(line.get("points").split()), 1)

    def test_bar_edge_cases(self):
        cases = [
            dict(categories=[], series={}),
            dict(categories=["a"], series={}),
            dict(categories=[], series={"s": []}),
            dict(categories=["a", "b"], series={"s": [0, 0]}),
            dict(categories=["a"], series={"s": [5]}),
            dict(categories=["a", "b"], series={"s": [-3, 2]}),
            dict(categories=["a"], series={"s": [None]}),
            dict(categories=["a"], series={"s": [1]}, reference=(float("nan"), "x")),
            dict(categories=["a"], series={"s": [0]}, reference=(0, "zero")),
            dict(categories=["a"], series={"s": [1]}, reference=(10.0, "")),
            dict(categories=[f"long category name {i}" for i in range(12)],
                 series={f"s{i}": [i * j * 1234.5 for j in range(12)] for i in range(10)}),
        ]
        for i, case in enumerate(cases):
            with self.subTest(case=case):
                root = self.parse(plot.bar_chart(self.path(f"b{i}.svg"), "edge", "y", **case))
                expected = sum(v is not None and math.isfinite(v)
                               for vs in case["series"].values() for v in vs)
                self.assertEqual(len(self.find(root, "rect", "bar")), expected)
                for r in self.find(root, "rect"):
                    self.assertGreaterEqual(float(r.get("height")), 0)
                    self.assertGreaterEqual(float(r.get("width")), 0)

    # ------------------------------------------------------------ helpers

    def test_ticks(self):
        for lo, hi in [(0, 1), (0, 7.5), (3, 17), (-3, 4), (0.11, 0.13), (0, 2.3e6),
                       (0, 1e-7), (1e9, 1e9 + 3), (-1e-3, 0)]:
            with self.subTest(lo=lo, hi=hi):
                ticks, a, b, labels = plot._linear_ticks(lo, hi)
                self.assertLessEqual(a, lo)
                self.assertGreaterEqual(b, hi)
                self.assertTrue(3 <= len(ticks) <= 7, labels)
                self.assertEqual(len(set(labels)), len(labels), labels)
                # Steps are 1, 2 or 5 times a power of ten.
                step = ticks[1] - ticks[0]
                mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
                self.assertTrue(any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5)), step)
        self.assertEqual(plot._linear_ticks(0, 1)[3], ["0", "0.2", "0.4", "0.6", "0.8", "1.0"])
        self.assertEqual(plot._linear_ticks(0, 100)[3], ["0", "20", "40", "60", "80", "100"])

    def test_three_significant_digits(self):
        cases = {0: "0", 0.8: "0.800", 12.345: "12.3", 999.7: "1000", 12345: "12300",
                 1234567: "1.23M", -0.5: "-0.500", 1.234e-7: "123n", 999999: "1.00M",
                 0.00099999: "0.00100", 4.5e-5: "45.0\u00b5", 2e18: "2.00E"}
        for v, s in cases.items():
            self.assertEqual(plot._fmt_sig(v), s, v)

    def test_demo(self):
        paths = plot._demo(self.dir)
        self.assertEqual(len(paths), 2)
        for p in paths:
            self.parse(p)


if __name__ == "__main__":
    unittest.main()
