/* SPDX-License-Identifier: Apache-2.0 */
/* test_fuzz_regress.c - replay the fuzz targets' inputs without libFuzzer.
 *
 * Every file under tests/fuzz/regress/<target>/ (reproducers of fixed
 * crashes and invariant breaks) and tests/fuzz/corpus/<target>/ (the seeds)
 * goes through the very entry points tests/fuzz/run.sh fuzzes, compiled here by
 * the normal build (and so under ASan+UBSan by `make check`). A broken
 * invariant aborts, which the runner reports as a crash of that test.
 */
#define ZKW_FUZZ_REPLAY 1

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fuzz_adopt.c"
#include "fuzz_cli.c"
#include "fuzz_pointer.c"
#include "fuzz_segment.c"
#include "fuzz_validate.c"

typedef int (*fuzz_entry)(const uint8_t *, size_t);

static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Replay every regular file of ROOT/tests/fuzz/<kind>/<target>/. */
static int replay_dir(const char *kind, const char *target, fuzz_entry entry)
{
	const char *root = getenv("ZKW_ROOT");
	char dir[4096], path[8192];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/tests/fuzz/%s/%s", root && *root ? root : ".", kind, target);
	if (!(d = opendir(dir)))
		return errno == ENOENT ? 0 : -1;
	while ((e = readdir(d))) {
		size_t len = 0;
		uint8_t *data;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (!(data = read_all(path, &len)))
			continue;
		fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
		entry(data, len);
		free(data);
		n++;
	}
	closedir(d);
	return n;
}

static void replay(const char *target, fuzz_entry entry)
{
	int seeds = replay_dir("corpus", target, entry);
	int regress = replay_dir("regress", target, entry);

	assert_true(seeds >= 0 && regress >= 0);
	assert_true(seeds > 0); /* the corpus is where it should be */
}

static void test_replay_pointer(void **state)
{
	(void)state;
	replay("pointer", fuzz_pointer);
}

static void test_replay_segment(void **state)
{
	(void)state;
	replay("segment", fuzz_segment);
}

static void test_replay_adopt(void **state)
{
	(void)state;
	replay("adopt", fuzz_adopt);
}

static void test_replay_cli(void **state)
{
	(void)state;
	replay("cli", fuzz_cli);
}

static void test_replay_validate(void **state)
{
	(void)state;
	replay("validate", fuzz_validate);
}

/* Found while writing fuzz_cli: "--capacity 18014398509481985k" wrapped
 * (2^54 + 1) * 1024 to 1024 and was accepted. */
static void test_capacity_suffix_overflow_refused(void **state)
{
	static zkw_cli cli;
	char why[256];
	char *big[] = {"zkw-broker", "-z", "h:1", "-f", "/a", "--capacity", "18014398509481985k", NULL};
	char *bigm[] = {"zkw-broker", "-z", "h:1", "-f", "/a", "--capacity", "17592186044417m", NULL};
	char *max[] = {"zkw-broker", "-z", "h:1", "-f", "/a", "--capacity", "256m", NULL};
	char *over[] = {"zkw-broker", "-z", "h:1", "-f", "/a", "--capacity", "262145k", NULL};

	(void)state;
	assert_int_equal(zkw__cli_parse(&cli, 7, big, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "--capacity"));
	zkw__cli_free(&cli);
	assert_int_equal(zkw__cli_parse(&cli, 7, bigm, why, sizeof(why)), -EINVAL);
	zkw__cli_free(&cli);
	assert_int_equal(zkw__cli_parse(&cli, 7, over, why, sizeof(why)), -EINVAL);
	zkw__cli_free(&cli);
	assert_int_equal(zkw__cli_parse(&cli, 7, max, why, sizeof(why)), 0);
	assert_int_equal(cli.watches[0].capacity, 256u * 1024 * 1024);
	zkw__cli_free(&cli);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_replay_pointer),
	        cmocka_unit_test(test_replay_segment),
	        cmocka_unit_test(test_replay_adopt),
	        cmocka_unit_test(test_replay_cli),
	        cmocka_unit_test(test_replay_validate),
	        cmocka_unit_test(test_capacity_suffix_overflow_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
