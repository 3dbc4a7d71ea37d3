//! Framing throughput on the response path: a result set of DataRows as a
//! server sends it, walked in place the way the proxy inspects a batch
//! before forwarding it whole, and split into owned frames the way the
//! request path takes client messages.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgsplit_protocol::encode;
use pgsplit_protocol::frame::Frames;
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};

/// RowDescription, `rows` DataRows of three columns, CommandComplete,
/// ReadyForQuery: one simple query's reply.
fn result_set(rows: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    encode::row_description(&mut buf, &["aid", "bid", "filler"]);
    for i in 0..rows {
        let aid = i.to_string();
        encode::data_row(
            &mut buf,
            &[
                Some(&aid),
                Some("1"),
                Some("                                        "),
            ],
        );
    }
    encode::command_complete(&mut buf, &format!("SELECT {rows}"));
    encode::ready_for_query(&mut buf, TransactionStatus::Idle);
    buf
}

fn walk_in_place(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    for rows in [1usize, 100, 10_000] {
        let batch = result_set(rows);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function(format!("walk_{rows}_rows"), |b| {
            b.iter(|| {
                let mut frames = Frames::new(black_box(&batch), Direction::Backend, 1 << 30);
                let mut ready = 0;
                for item in frames.by_ref() {
                    if item.unwrap().0 == b'Z' {
                        ready += 1;
                    }
                }
                (ready, frames.consumed())
            })
        });
        g.bench_function(format!("split_{rows}_rows"), |b| {
            b.iter_batched(
                || batch.clone(),
                |mut buf| {
                    let mut n = 0;
                    while let Some(f) = split_frame(&mut buf, Direction::Backend, 1 << 30).unwrap()
                    {
                        n += f.as_bytes().len();
                    }
                    n
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, walk_in_place);
criterion_main!(benches);
