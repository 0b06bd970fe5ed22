/* SPDX-License-Identifier: Apache-2.0 */
/* bench_cache.c - per-read cost of the RCU reader cache (zkw/cache.h)
 * against copying reads with zkw_reader_read() (zkw/client.h), side by side
 * in one run, for 1, 2 and 8 threads and 4 KiB / 64 KiB contents.
 *
 *   cache: zkw_cache_get() + touch len, first and last byte + zkw_cache_put()
 *   copy:  zkw_reader_read(r, NULL, buf, cap) + touch the same bytes
 *          (meta = NULL: the cheapest copying read, no error/pointer text)
 *
 * Each thread times batches of reads; the table shows ns/read over all
 * batches of all threads (min, median, p99) and copy/cache ratios of the
 * medians. The segment is written in this process (broker/writer.h) and is
 * quiet during the measurement: this is the read path alone.
 *
 *   build/bench/bench_cache [--quick] [--markdown]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zkw/cache.h>
#include <zkw/client.h>

#include "bench.h"
#include "publish/writer.h"

#define MAX_THREADS 8

static const int thread_counts[] = {1, 2, 8};
static const size_t content_sizes[] = {4096, 65536};

enum mode { MODE_CACHE, MODE_COPY };

struct run {
	enum mode mode;
	zkw_cache *cache;
	const zkw_reader *reader;
	size_t size;
	int batches;
	int reads_per_batch;
	pthread_barrier_t *start;
};

struct worker {
	pthread_t thread;
	const struct run *run;
	double *samples; /* ns/read per batch */
	const char *failure;
	unsigned long sink;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct run *run = w->run;
	unsigned char *buf = NULL;
	unsigned long sink = 0;
	int b, i;

	if (run->mode == MODE_COPY && !(buf = malloc(run->size))) {
		w->failure = "out of memory";
		pthread_barrier_wait(run->start);
		return NULL;
	}
	pthread_barrier_wait(run->start);
	for (b = 0; b < run->batches && !w->failure; b++) {
		uint64_t t0 = zkw_clock_mono_ns();

		if (run->mode == MODE_CACHE) {
			for (i = 0; i < run->reads_per_batch; i++) {
				const zkw_cache_snapshot *s = zkw_cache_get(run->cache);

				sink += s->len + s->content[0] + s->content[s->len - 1];
				zkw_cache_put(run->cache, s);
			}
		} else {
			for (i = 0; i < run->reads_per_batch; i++) {
				ssize_t n = zkw_reader_read(run->reader, NULL, buf, run->size);

				if (n <= 0) {
					w->failure = "zkw_reader_read failed";
					break;
				}
				sink += (size_t)n + buf[0] + buf[n - 1];
			}
		}
		w->samples[b] = (double)(zkw_clock_mono_ns() - t0) / run->reads_per_batch;
	}
	w->sink = sink;
	free(buf);
	return NULL;
}

/* min, the upper median, and p99 as the element at index 0.99 k (not
 * bench_stats_of's figures: these are the ones BENCHMARKS.md has shown). */
struct stats {
	double min, median, p99;
};

/* Run one configuration; stats over every batch of every thread. */
static int measure(const struct run *tmpl, int threads, struct stats *st)
{
	struct worker ws[MAX_THREADS];
	pthread_barrier_t start;
	struct run run = *tmpl;
	size_t n = (size_t)threads * (size_t)run.batches, k = 0;
	double *all = calloc(n, sizeof(*all));
	int t, err = 0;

	if (!all)
		return -ENOMEM;
	pthread_barrier_init(&start, NULL, (unsigned)threads);
	run.start = &start;
	memset(ws, 0, sizeof(ws));
	for (t = 0; t < threads; t++) {
		ws[t].run = &run;
		ws[t].samples = all + (size_t)t * (size_t)run.batches;
		if (pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]) != 0) {
			fprintf(stderr, "bench_cache: cannot create thread\n");
			exit(1); /* the barrier would never open */
		}
	}
	for (t = 0; t < threads; t++) {
		pthread_join(ws[t].thread, NULL);
		if (ws[t].failure) {
			fprintf(stderr, "bench_cache: %s\n", ws[t].failure);
			err = -EIO;
		}
	}
	pthread_barrier_destroy(&start);
	k = n;
	qsort(all, k, sizeof(*all), bench_cmp_double);
	st->min = all[0];
	st->median = all[k / 2];
	st->p99 = all[(k * 99) / 100 < k ? (k * 99) / 100 : k - 1];
	free(all);
	return err;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: bench_cache [--quick] [--markdown]\n"
	             "  per-read cost of zkw_cache_get/put vs zkw_reader_read copies,\n"
	             "  1, 2 and 8 threads, 4 KiB and 64 KiB contents\n");
}

int main(int argc, char **argv)
{
	bool quick = false, markdown = false;
	char name[64], why[256];
	zkw_writer_options wopt = {.capacity = 65536, .group = (gid_t)-1, .watch_path = "/bench/cache"};
	zkw_writer *w;
	unsigned char *content;
	size_t si;
	int rc;

	rc = bench_quick_markdown(argc, argv, "bench_cache", usage, &quick, &markdown);
	if (rc)
		return rc;

	snprintf(name, sizeof(name), "/zkw.bench.cache.%d", (int)getpid());
	if (zkw_writer_open(&w, name, &wopt, why, sizeof(why)) != 0) {
		fprintf(stderr, "bench_cache: %s\n", why);
		return 1;
	}
	content = malloc(65536);
	if (!content) {
		fprintf(stderr, "bench_cache: out of memory\n");
		zkw_writer_close(w, true);
		return 1;
	}
	for (si = 0; si < 65536; si++)
		content[si] = (unsigned char)(si * 131u + 7u);

	if (markdown) {
		printf("| content | threads | cache ns/read min / median / p99 | copy ns/read min / median / "
		       "p99 | copy / cache (median) |\n");
		printf("|---:|---:|---:|---:|---:|\n");
	} else {
		printf("%-8s %7s  %-28s  %-28s  %s\n", "content", "threads", "cache get/put ns/read",
		       "zkw_reader_read ns/read", "copy/cache");
		printf("%-8s %7s  %-28s  %-28s  %s\n", "", "", "min / median / p99", "min / median / p99",
		       "(median)");
	}

	for (si = 0; si < sizeof(content_sizes) / sizeof(content_sizes[0]) && rc == 0; si++) {
		size_t size = content_sizes[si];
		zkw_publication p = {.valid = true,
		                     .connected = true,
		                     .content = content,
		                     .len = size,
		                     .content_serial = si + 1};
		zkw_reader reader;
		zkw_cache *cache;
		size_t ti;

		if (zkw_writer_publish(w, &p) != 0 || zkw_reader_open(&reader, name) != 0 ||
		    zkw_cache_open(&cache, name, NULL) != 0) {
			fprintf(stderr, "bench_cache: cannot set up segment %s\n", name);
			rc = 1;
			break;
		}
		for (ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
			int threads = thread_counts[ti];
			int batches = quick ? 20 : 200;
			struct run cache_run = {.mode = MODE_CACHE,
			                        .cache = cache,
			                        .size = size,
			                        .batches = batches,
			                        .reads_per_batch = 20000};
			struct run copy_run = {.mode = MODE_COPY,
			                       .reader = &reader,
			                       .size = size,
			                       .batches = batches,
			                       .reads_per_batch = size <= 4096 ? 2000 : 200};
			struct stats sc, sr;
			char kib[32];

			if (measure(&cache_run, threads, &sc) || measure(&copy_run, threads, &sr)) {
				rc = 1;
				break;
			}
			snprintf(kib, sizeof(kib), "%zu KiB", size / 1024);
			if (markdown)
				printf("| %s | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %.0fx |\n", kib,
				       threads, sc.min, sc.median, sc.p99, sr.min, sr.median, sr.p99,
				       sr.median / sc.median);
			else
				printf("%-8s %7d  %7.1f / %7.1f / %7.1f   %7.1f / %7.1f / %7.1f   %6.0fx\n",
				       kib, threads, sc.min, sc.median, sc.p99, sr.min, sr.median, sr.p99,
				       sr.median / sc.median);
			fflush(stdout);
		}
		zkw_cache_close(cache);
		zkw_reader_close(&reader);
	}
	if (!markdown && rc == 0)
		printf("(%s; %ld CPUs online; 8 threads on fewer cores include preemption in p99)\n",
		       quick ? "--quick" : "full run", sysconf(_SC_NPROCESSORS_ONLN));
	free(content);
	zkw_writer_close(w, true);
	return rc;
}
