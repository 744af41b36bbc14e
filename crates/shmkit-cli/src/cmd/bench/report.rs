//! What `shmkit bench` prints: the table with ratios, `--json` with every
//! statistic and the machine, `--svg` plots, and the merge of peers' results
//! (iceoryx2) from `bench/peers`.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde_json::{Value, json};

use super::Cell;
use super::SIZES;
use super::floors::Floors;
use super::links::{ALL, Mechanism};
use crate::output::out;

/// A peer's figure merged from `bench/peers`.
#[derive(Debug, Clone)]
pub(crate) struct PeerResult {
    pub(crate) name: String,
    pub(crate) size: usize,
    pub(crate) round_trip_ns: f64,
    pub(crate) floor_ns: f64,
}

pub(crate) struct Report {
    pub(crate) plan: super::Plan,
    pub(crate) floors: Floors,
    pub(crate) cells: Vec<Vec<Cell>>,
    pub(crate) peers: Vec<PeerResult>,
    pub(crate) elapsed: Duration,
    pub(crate) cpus: (usize, usize),
}

pub(crate) fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * p).round() as usize])
}

fn ns(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} ms", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.2} us", x / 1e3)
    } else {
        format!("{x:.0} ns")
    }
}

fn rate(x: f64) -> String {
    if x >= 1e6 { format!("{:.1} M/s", x / 1e6) } else { format!("{:.1} k/s", x / 1e3) }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let cpu = read("/proc/cpuinfo").and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    json!({
        "cpu_model": cpu,
        // Not available_parallelism: this process is pinned to one CPU by now.
        // SAFETY: sysconf has no preconditions.
        "cores": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "kernel": read("/proc/sys/kernel/osrelease"),
        "idle_driver": read("/sys/devices/system/cpu/cpuidle/current_driver"),
    })
}

/// Median streaming rate (messages/s) of a cell.
fn stream_rate(cell: &Cell) -> Option<f64> {
    let rates: Vec<f64> = cell.streams.iter().map(|(m, s)| m / s).collect();
    percentile(&rates, 0.5)
}

impl Report {
    fn floor_ns(&self) -> f64 {
        percentile(&self.floors.cache_line_ns, 0.5).unwrap_or(f64::NAN)
    }

    /// The best classic (non-shmkit) median round trip at size index `si`.
    fn best_peer_rt(&self, si: usize) -> Option<(f64, &'static str)> {
        ALL.iter()
            .enumerate()
            .filter(|(_, m)| !m.is_shmkit())
            .filter_map(|(mi, m)| percentile(&self.cells[mi][si].round_trips_ns, 0.5).map(|v| (v, m.name())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn best_peer_rate(&self, si: usize) -> Option<f64> {
        ALL.iter()
            .enumerate()
            .filter(|(_, m)| !m.is_shmkit())
            .filter_map(|(mi, _)| stream_rate(&self.cells[mi][si]))
            .max_by(f64::total_cmp)
    }

    pub(crate) fn json(&self) -> Value {
        let stats = |s: &[f64]| {
            json!({
                "samples": s.len(),
                "median_ns": percentile(s, 0.5),
                "p99_ns": percentile(s, 0.99),
                "p999_ns": percentile(s, 0.999),
                "min_ns": percentile(s, 0.0),
                "max_ns": percentile(s, 1.0),
                "mean_ns": (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64),
            })
        };
        let mut results = Vec::new();
        for (mi, m) in ALL.iter().enumerate() {
            for (si, &size) in SIZES.iter().enumerate() {
                let cell = &self.cells[mi][si];
                if cell.skipped {
                    continue;
                }
                let msgs = stream_rate(cell);
                results.push(json!({
                    "mechanism": m.name(),
                    "shmkit": m.is_shmkit(),
                    "size": size,
                    "round_trip": stats(&cell.round_trips_ns),
                    "round_trip_same_core": stats(&cell.same_core_ns),
                    "stream": {
                        "repetitions": cell.streams.len(),
                        "messages_per_s": msgs,
                        "bytes_per_s": msgs.map(|r| r * size as f64),
                    },
                    "unsupported": cell.unsupported,
                    "error": cell.error,
                }));
            }
        }
        json!({
            "machine": machine(),
            "cpus": [self.cpus.0, self.cpus.1],
            "repetitions": self.plan.reps,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "sizes": SIZES,
            "floors": {
                "cache_line_round_trip": stats(&self.floors.cache_line_ns),
                "cache_line_round_trip_same_core": stats(&self.floors.cache_line_same_core_ns),
                "futex_round_trip": stats(&self.floors.futex_ns),
                "memcpy_bytes_per_s": SIZES.iter().zip(&self.floors.memcpy_bps).map(|(s, b)| json!({"size": s, "bytes_per_s": b})).collect::<Vec<_>>(),
            },
            "results": results,
            "peers": self.peers.iter().map(|p| json!({
                "mechanism": p.name, "size": p.size, "round_trip_median_ns": p.round_trip_ns, "their_floor_ns": p.floor_ns,
            })).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn print(&self) -> std::io::Result<()> {
        let floor = self.floor_ns();
        let futex = percentile(&self.floors.futex_ns, 0.5).unwrap_or(f64::NAN);
        let m = machine();
        out!(
            "shmkit bench: {} ({} cores, kernel {}, idle driver {}), processes pinned to CPUs {} and {}, {} repetitions, {:.0} s",
            m["cpu_model"].as_str().unwrap_or("?"),
            m["cores"],
            m["kernel"].as_str().unwrap_or("?"),
            m["idle_driver"].as_str().unwrap_or("?"),
            self.cpus.0,
            self.cpus.1,
            self.plan.reps,
            self.elapsed.as_secs_f64()
        );
        out!(
            "floors: cache-line round trip {} (same core {}), futex ping-pong {}",
            ns(floor),
            ns(percentile(&self.floors.cache_line_same_core_ns, 0.5).unwrap_or(f64::NAN)),
            ns(futex)
        );
        out!("");
        let header = [
            "size",
            "mechanism",
            "round trip",
            "p99",
            "p99.9",
            "x floor",
            "x best peer",
            "same core",
            "stream",
            "GB/s",
            "x memcpy",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        for (si, &size) in SIZES.iter().enumerate() {
            let best = self.best_peer_rt(si);
            let best_rate = self.best_peer_rate(si);
            let memcpy = self.floors.memcpy_bps[si];
            for (mi, m) in ALL.iter().enumerate() {
                let cell = &self.cells[mi][si];
                if cell.skipped {
                    continue;
                }
                if let Some(why) = cell.unsupported.as_ref().or(cell.error.as_ref()) {
                    rows.push(vec![size_name(size), m.name().into(), format!("cannot: {why}")]);
                    continue;
                }
                let med = percentile(&cell.round_trips_ns, 0.5).unwrap_or(f64::NAN);
                let rate_v = stream_rate(cell).unwrap_or(f64::NAN);
                // Pub/sub is also set against the peers' pub/sub (iceoryx2).
                let vs_peer = match m {
                    Mechanism::PubSub => self
                        .peers
                        .iter()
                        .find(|p| p.size == size)
                        .map(|p| format!(" ({:.2}x {})", med / p.round_trip_ns, p.name))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let vs_best = match (m.is_shmkit(), best) {
                    (true, Some((b, _))) => format!("{:.2}{vs_peer}", med / b),
                    (true, None) => "-".into(),
                    (false, Some((_, name))) if name == m.name() => "best".into(),
                    _ => "".into(),
                };
                let rate_vs = match (m.is_shmkit(), best_rate) {
                    (true, Some(b)) => format!(" ({:.1}x peer)", rate_v / b),
                    _ => String::new(),
                };
                rows.push(vec![
                    size_name(size),
                    m.name().into(),
                    ns(med),
                    ns(percentile(&cell.round_trips_ns, 0.99).unwrap_or(f64::NAN)),
                    ns(percentile(&cell.round_trips_ns, 0.999).unwrap_or(f64::NAN)),
                    format!("{:.2}", med / floor),
                    vs_best,
                    percentile(&cell.same_core_ns, 0.5).map_or("-".into(), ns),
                    format!("{}{rate_vs}", rate(rate_v)),
                    format!("{:.2}", rate_v * size as f64 / 1e9),
                    format!("{:.2}", rate_v * size as f64 / memcpy),
                ]);
            }
            for p in self.peers.iter().filter(|p| p.size == size) {
                let vs = best.map_or("-".into(), |(b, _)| format!("{:.2}", p.round_trip_ns / b));
                rows.push(vec![
                    size_name(size),
                    p.name.clone(),
                    ns(p.round_trip_ns),
                    "-".into(),
                    "-".into(),
                    format!("{:.2}", p.round_trip_ns / p.floor_ns),
                    vs,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            if rows.last().is_some_and(|r| !r.is_empty()) {
                rows.push(Vec::new());
            }
        }
        let mut widths = header.iter().map(|h| h.len()).collect::<Vec<_>>();
        // Rows that say why a mechanism cannot run span the row; they do not
        // set the column widths.
        for r in rows.iter().filter(|r| r.len() == header.len()) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| -> String {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        out!("{}", line(header.iter().map(|h| h.to_string()).collect()));
        for r in rows {
            out!("{}", line(r));
        }
        out!(
            "x floor: round trip / cache-line round trip between the same two cores. x best peer: shmkit's round trip / the fastest classic mechanism's at that size (pub/sub also / the peers' pub/sub). x memcpy: stream bandwidth / single-thread memcpy at that size."
        );
        Ok(())
    }

    pub(crate) fn svg(&self, path: &Path) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(550);
        let xs = || (SIZES[0] as f64..SIZES[SIZES.len() - 1] as f64 * 1.5).log_scale();
        let lat: Vec<(Mechanism, Vec<(f64, f64)>)> = ALL
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                let pts = SIZES
                    .iter()
                    .enumerate()
                    .filter_map(|(si, &s)| {
                        percentile(&self.cells[mi][si].round_trips_ns, 0.5).map(|v| (s as f64, v / 1e3))
                    })
                    .collect();
                (*m, pts)
            })
            .collect();
        let thr: Vec<(Mechanism, Vec<(f64, f64)>)> = ALL
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                let pts = SIZES
                    .iter()
                    .enumerate()
                    .filter_map(|(si, &s)| stream_rate(&self.cells[mi][si]).map(|r| (s as f64, r * s as f64 / 1e9)))
                    .collect();
                (*m, pts)
            })
            .collect();
        for (area, title, ylabel, series) in
            [(&left, "round trip (median)", "microseconds", &lat), (&right, "one-way stream", "GB/s", &thr)]
        {
            let all: Vec<f64> =
                series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).filter(|y| *y > 0.0).collect();
            let (lo, hi) = (
                all.iter().copied().fold(f64::INFINITY, f64::min).max(1e-4) / 2.0,
                all.iter().copied().fold(0.0, f64::max).max(1e-3) * 2.0,
            );
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(xs(), (lo..hi).log_scale())?;
            chart.configure_mesh().x_desc("message size (bytes)").y_desc(ylabel).draw()?;
            for (i, (m, pts)) in series.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
                    .label(m.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// Runs the peers' benchmark binary (`bench/peers`, built separately) and
/// reads its JSON lines.
pub(crate) fn run_peers(path: &Path) -> anyhow::Result<Vec<PeerResult>> {
    let output = std::process::Command::new(path).arg("--json").output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run the peers' benchmark {}: {e}; build it with `cd bench/peers && cargo build --release`",
            path.display()
        )
    })?;
    anyhow::ensure!(
        output.status.success(),
        "the peers' benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)?;
        out.push(PeerResult {
            name: format!("{} {}", v["peer"].as_str().unwrap_or("peer"), v["pattern"].as_str().unwrap_or("")),
            size: v["size"].as_u64().unwrap_or(0) as usize,
            round_trip_ns: v["round_trip_ns"].as_f64().unwrap_or(f64::NAN),
            floor_ns: v["floor_ns"].as_f64().unwrap_or(f64::NAN),
        });
    }
    Ok(out)
}
