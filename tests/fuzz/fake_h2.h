/*
 * fake_h2 — h2.h's stream API answered from a script instead of a server,
 * for the targets that fuzz what sits above grpc.c (etcd.c, watch.c).
 *
 * Each unary call (a stream with a deadline) takes the script's next
 * record, [tag u8][length u16][bytes], and is answered at once, inside
 * h2_stream_submit (h2.h allows on_close before it returns):
 *   tag % 5 == 0  a gRPC message: response headers, the bytes framed, trailers OK
 *   tag % 5 == 1  the bytes as the raw response body, then trailers OK
 *   tag % 5 == 2  trailers only: grpc-status the first byte, grpc-message the rest
 *   tag % 5 == 3  the connection is lost (-ECONNRESET)
 *   tag % 5 == 4  the deadline passes (-ETIMEDOUT)
 * When the script has run out, calls fail with -EPROTO, so that retry loops
 * end. Streams without a deadline are refused (-ENOTCONN).
 */
#pragma once

#include "fuzz.h"

/* The script for the calls that follow (borrowed until the next call). */
void fake_h2_script(struct fz_in *script);

/* Calls answered, and h2_leave calls seen, since the last fake_h2_script. */
unsigned fake_h2_calls(void);
unsigned fake_h2_leaves(void);
