/* SPDX-License-Identifier: Apache-2.0 */
/* guard.c - see guard.h. */
#include "guard.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

static unsigned char *guarded; /* GUARD_MAX readable bytes, then a PROT_NONE page */

int guard_map(void **state)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned char *m;

	(void)state;
	m = mmap(NULL, GUARD_MAX + (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m + GUARD_MAX, (size_t)page, PROT_NONE) != 0)
		return -1;
	guarded = m;
	return 0;
}

int guard_unmap(void **state)
{
	(void)state;
	munmap(guarded, GUARD_MAX + (size_t)sysconf(_SC_PAGESIZE));
	return 0;
}

unsigned char *guard_place(const void *content, size_t n)
{
	unsigned char *at;

	assert_true(n <= GUARD_MAX);
	at = guarded + GUARD_MAX - n;
	memmove(at, content, n);
	return at;
}
