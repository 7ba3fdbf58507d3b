/*
 * fuzz — what every libFuzzer target here shares: the entry points, a
 * reader that takes an input apart (running out of bytes yields zeros and
 * empty slices, so every input is a valid one), and quiet logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

struct fz_in {
	const uint8_t *p;
	size_t n;
};

uint8_t fz_u8(struct fz_in *in);
/* Big-endian, as the seed generator writes lengths. */
uint16_t fz_u16(struct fz_in *in);
/* Up to len bytes (fewer at the end of the input); *out borrows the input. */
size_t fz_bytes(struct fz_in *in, size_t len, const uint8_t **out);
/* A record: a 16-bit length, then that many bytes (or what is left). */
size_t fz_record(struct fz_in *in, const uint8_t **out);

/*
 * Debug, info, messages and warnings (a server's odd answer is worth one in
 * the daemon) are dropped: printing them would dominate the run. Criticals
 * (g_return_if_fail) and errors abort, so libFuzzer reports them as crashes.
 */
void fz_quiet_logs(void);
