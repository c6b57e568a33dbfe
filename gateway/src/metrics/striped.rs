//! Counters and latency histograms that every request updates, striped over
//! threads: each thread adds to cache lines of its own, so two workers never
//! write the same line, and a scrape sums the stripes. A family of them is a
//! prometheus collector in the default registry, so the text exposition is
//! the one prometheus' own counters and histograms give.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

/// How many stripes each metric has. Threads take them in turn, so up to this
/// many threads never share one; past that they share, which costs time and
/// loses nothing (every update is an atomic add).
const STRIPES: usize = 16;

/// Upper bounds of the latency buckets, in nanoseconds (10 µs to 5 s).
const BOUNDS: [u64; 14] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// The stripe of the calling thread.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// One thread's part, on cache lines of its own (128 bytes: the spatial
/// prefetcher pairs 64-byte lines).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A monotonic count.
#[derive(Default)]
pub struct Counter {
    stripes: [Padded<AtomicU64>; STRIPES],
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        if let Some(cell) = self.stripes.get(stripe()) {
            cell.0.fetch_add(n, Relaxed);
        }
    }

    /// The sum of every stripe.
    pub fn get(&self) -> u64 {
        self.stripes.iter().fold(0u64, |sum, cell| sum.wrapping_add(cell.0.load(Relaxed)))
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

/// A thread's counts per bucket (the last past every bound) and its sum of
/// nanoseconds: 128 bytes.
#[derive(Default)]
struct Cells {
    counts: [AtomicU64; BOUNDS.len() + 1],
    nanos: AtomicU64,
}

/// Latencies in buckets, exposed in seconds.
#[derive(Default)]
pub struct Histogram {
    stripes: Box<[Padded<Cells>; STRIPES]>,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS.iter().position(|bound| nanos <= *bound).unwrap_or(BOUNDS.len());
        if let Some(cells) = self.stripes.get(stripe()) {
            if let Some(count) = cells.0.counts.get(bucket) {
                count.fetch_add(1, Relaxed);
            }
            cells.0.nanos.fetch_add(nanos, Relaxed);
        }
    }

    /// Counts per bucket (not cumulative, the last past every bound) and
    /// the sum of nanoseconds, over every stripe.
    fn snapshot(&self) -> ([u64; BOUNDS.len() + 1], u64) {
        let mut counts = [0u64; BOUNDS.len() + 1];
        let mut nanos = 0u64;
        for cells in self.stripes.iter() {
            for (total, count) in counts.iter_mut().zip(&cells.0.counts) {
                *total = total.wrapping_add(count.load(Relaxed));
            }
            nanos = nanos.wrapping_add(cells.0.nanos.load(Relaxed));
        }
        (counts, nanos)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").finish_non_exhaustive()
    }
}

/// What a family's series are: how one is written into the exposition.
pub trait Series: Default + Send + Sync + 'static {
    const TYPE: proto::MetricType;
    fn write(&self, metric: &mut proto::Metric);
}

impl Series for Counter {
    const TYPE: proto::MetricType = proto::MetricType::COUNTER;

    fn write(&self, metric: &mut proto::Metric) {
        let mut counter = proto::Counter::default();
        counter.set_value(self.get() as f64);
        metric.set_counter(counter);
    }
}

impl Series for Histogram {
    const TYPE: proto::MetricType = proto::MetricType::HISTOGRAM;

    fn write(&self, metric: &mut proto::Metric) {
        let (counts, nanos) = self.snapshot();
        let mut cumulative = 0u64;
        let buckets = BOUNDS
            .iter()
            .zip(counts)
            .map(|(bound, count)| {
                cumulative = cumulative.wrapping_add(count);
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(*bound as f64 / 1e9);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        // The count is the sum of the buckets, so the two always agree (the
        // encoder writes it as the `+Inf` bucket).
        let count = counts.iter().fold(0u64, |sum, count| sum.wrapping_add(*count));
        let mut histogram = proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(count);
        histogram.set_sample_sum(nanos as f64 / 1e9);
        metric.set_histogram(histogram);
    }
}

/// A metric's series by their label values. Series are resolved when a
/// handle is made; updates go to the handle alone.
pub struct Family<S> {
    desc: Desc,
    series: Mutex<BTreeMap<Vec<String>, Arc<S>>>,
}

impl<S: Series> Family<S> {
    /// A family registered in the default registry. When the name is taken
    /// (a second family of one name in a process) it still counts, unexposed.
    pub fn registered(name: &str, help: &str, labels: &[&str]) -> &'static Self {
        let labels = labels.iter().map(|label| (*label).to_owned()).collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), labels, Default::default())
            .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let family: &'static Self = Box::leak(Box::new(Self { desc, series: Mutex::default() }));
        let _ = prometheus::register(Box::new(Exposed(family)));
        family
    }

    /// The series of `values` (one per label, in the labels' order).
    pub fn with_label_values(&self, values: &[&str]) -> Arc<S> {
        debug_assert_eq!(values.len(), self.desc.variable_labels.len(), "{}", self.desc.fq_name);
        let key: Vec<String> = values.iter().map(|value| (*value).to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(series.entry(key).or_default())
    }

    fn collect(&self) -> proto::MetricFamily {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = series
            .iter()
            .map(|(values, series)| {
                let mut labels: Vec<proto::LabelPair> = self
                    .desc
                    .variable_labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = proto::LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let mut metric = proto::Metric::from_label(labels);
                series.write(&mut metric);
                metric
            })
            .collect();
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(S::TYPE);
        family.set_metric(metrics);
        family
    }
}

/// A family as the registry holds it.
struct Exposed<S: 'static>(&'static Family<S>);

impl<S: Series> Collector for Exposed<S> {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![self.0.collect()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(family: &Family<impl Series>) -> String {
        let mut text = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&[family.collect()], &mut text) {
            panic!("cannot encode: {e}");
        }
        text
    }

    /// The text is prometheus' own: the same family through its histogram
    /// and through ours, on the same observations, reads the same.
    #[test]
    fn a_histogram_reads_as_prometheus_own() {
        let ours: &Family<Histogram> =
            Family::registered("tollgate_test_striped_seconds", "A test histogram", &["stage", "route"]);
        let buckets = BOUNDS.iter().map(|bound| *bound as f64 / 1e9).collect();
        let opts = prometheus::HistogramOpts::new("tollgate_test_striped_seconds", "A test histogram").buckets(buckets);
        let theirs = prometheus::HistogramVec::new(opts, &["stage", "route"]).unwrap_or_else(|e| panic!("{e}"));
        let observations = [0u64, 1, 9_999, 10_000, 10_001, 250_000, 4_999_999_999, 5_000_000_000, 7_000_000_000];
        for (i, nanos) in observations.iter().enumerate() {
            let labels = if i % 2 == 0 { ["policy", "crm"] } else { ["route", "admin"] };
            let took = Duration::from_nanos(*nanos);
            // Observed from other threads too: every stripe is summed.
            std::thread::scope(|s| {
                s.spawn(|| ours.with_label_values(&labels).observe(took));
            });
            theirs.with_label_values(&labels).observe(took.as_secs_f64());
        }
        let mut expected = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&prometheus::core::Collector::collect(&theirs), &mut expected) {
            panic!("cannot encode: {e}");
        }
        // The sums differ in their last digits: ours adds nanoseconds.
        let without_sums = |text: &str| text.lines().filter(|l| !l.contains("_sum{")).collect::<Vec<_>>().join("\n");
        assert_eq!(without_sums(&exposition(ours)), without_sums(&expected));
        assert!(
            exposition(ours)
                .contains("tollgate_test_striped_seconds_sum{route=\"crm\",stage=\"policy\"} 12.000019999\n")
        );
        assert!(exposition(ours).contains("tollgate_test_striped_seconds_count{route=\"crm\",stage=\"policy\"} 5\n"));
    }

    /// Counts from many threads, more than there are stripes, all add up.
    #[test]
    fn a_counter_counts_every_thread() {
        let family: &Family<Counter> = Family::registered("tollgate_test_striped_total", "A test counter", &["cache"]);
        let counter = family.with_label_values(&["tokens"]);
        std::thread::scope(|s| {
            for _ in 0..(STRIPES * 2 + 3) {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    family.with_label_values(&["tokens"]).inc_by(5);
                });
            }
        });
        let threads = (STRIPES * 2 + 3) as u64;
        assert_eq!(counter.get(), threads * 1005);
        let text = exposition(family);
        assert!(text.contains("# TYPE tollgate_test_striped_total counter\n"), "{text}");
        assert!(
            text.contains(&format!("tollgate_test_striped_total{{cache=\"tokens\"}} {}\n", threads * 1005)),
            "{text}"
        );
        // The other series of the family starts at zero.
        family.with_label_values(&["users"]);
        assert!(exposition(family).contains("tollgate_test_striped_total{cache=\"users\"} 0\n"));
    }
}
