/*
 * h2_seam — grpc.c's calls, opened without waiting, for fuzz_h2.
 *
 * grpc_unary and grpc_stream_open block until the I/O thread answers, and
 * fuzz_h2 plays the I/O thread itself on the same thread. These open the
 * same h2 streams with grpc.c's own callbacks (h2_seam.c is compiled with
 * grpc.c inside) and collect the outcome once fuzz_h2 has closed them.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "grpc.h"

struct ef_h2;
struct seam_call;

/* Submits a unary call as grpc_unary would; capped: a response of more
 * than 1 KiB is refused (grpc_unary_capped). */
struct seam_call *seam_unary_begin(struct ef_h2 *h, bool capped);

/* The call's result, once h2 has closed its stream (exactly once: checked),
 * as grpc_unary would return it; frees the call. */
int seam_unary_end(struct seam_call *c);

/* Opens a stream as grpc_stream_open would, without waiting for it to go
 * out. Free it with grpc_stream_free once it has closed. */
struct ef_grpc_stream *seam_stream_begin(struct ef_h2 *h, const struct ef_grpc_stream_ops *ops,
					 void *ud);

/* Frees a stream that has closed; returns whether it ever went out (only
 * then has its owner's on_close run). */
bool seam_stream_end(struct ef_grpc_stream *s);
