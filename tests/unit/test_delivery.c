/* SPDX-License-Identifier: Apache-2.0 */
/* test_delivery.c - the handler-call rule of zkw/common.h (contract 3):
 * zkw_delivery_next decides, zkw_delivery_call calls, in the fixed order.
 * The one copy behind client.h's dispatcher, zkw_watcher and zkw.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <zkw/common.h>

static void test_success_config_then_valid(void **state)
{
	zkw_delivery d = {0};

	(void)state;
	/* First content: config, then valid(true). */
	assert_int_equal(zkw_delivery_next(&d, true, 1, ""), ZKW_DELIVER_CONFIG | ZKW_DELIVER_VALID);
	assert_true(d.valid);
	/* Nothing new: nothing due. */
	assert_int_equal(zkw_delivery_next(&d, true, 1, ""), 0);
	/* New content while valid: config only. */
	assert_int_equal(zkw_delivery_next(&d, true, 2, NULL), ZKW_DELIVER_CONFIG);
	assert_int_equal(d.content_id, 2);
}

static void test_failure_valid_then_error(void **state)
{
	zkw_delivery d = {0};

	(void)state;
	/* Never valid: no valid(false), only the message. */
	assert_int_equal(zkw_delivery_next(&d, false, 0, "E1"), ZKW_DELIVER_ERROR);
	assert_string_equal(d.error, "E1");
	assert_int_equal(zkw_delivery_next(&d, false, 0, "E1"), 0); /* same message */
	assert_int_equal(zkw_delivery_next(&d, false, 0, "E2"), ZKW_DELIVER_ERROR);
	assert_int_equal(zkw_delivery_next(&d, false, 0, ""), 0);   /* no message */
	assert_int_equal(zkw_delivery_next(&d, false, 0, NULL), 0); /* no message */
	assert_string_equal(d.error, "E2");

	assert_int_equal(zkw_delivery_next(&d, true, 1, ""), ZKW_DELIVER_CONFIG | ZKW_DELIVER_VALID);
	/* Valid to invalid: valid(false), then the message. */
	assert_int_equal(zkw_delivery_next(&d, false, 1, "E2"), ZKW_DELIVER_VALID | ZKW_DELIVER_ERROR);
	assert_false(d.valid);
	/* Back with the same content: valid(true) only, no config. */
	assert_int_equal(zkw_delivery_next(&d, true, 1, ""), ZKW_DELIVER_VALID);
	/* The same error after a recovery is news again. */
	assert_int_equal(zkw_delivery_next(&d, false, 1, "E2"), ZKW_DELIVER_VALID | ZKW_DELIVER_ERROR);
}

static void test_long_error_is_cut(void **state)
{
	static char longer[ZKW_ERROR_MAX + 100];
	zkw_delivery d = {0};

	(void)state;
	memset(longer, 'x', sizeof longer - 1);
	assert_int_equal(zkw_delivery_next(&d, false, 0, longer), ZKW_DELIVER_ERROR);
	assert_int_equal(strlen(d.error), ZKW_ERROR_MAX - 1);
	assert_int_equal(zkw_delivery_next(&d, false, 0, longer), 0);
}

/* ---- zkw_delivery_call ---- */

struct calls {
	char log[256];
	int n;
	bool stop_in_config;
	bool stop;
};

static void on_valid(void *ctx, bool valid)
{
	struct calls *c = ctx;

	snprintf(c->log + strlen(c->log), sizeof c->log - strlen(c->log), "valid(%d) ", valid);
	c->n++;
}

static void on_config(void *ctx, const void *content, size_t len)
{
	struct calls *c = ctx;

	snprintf(c->log + strlen(c->log), sizeof c->log - strlen(c->log), "config(%.*s) ", (int)len,
	         (const char *)content);
	c->n++;
	if (c->stop_in_config)
		__atomic_store_n(&c->stop, true, __ATOMIC_RELEASE);
}

static void on_error(void *ctx, const char *message)
{
	struct calls *c = ctx;

	snprintf(c->log + strlen(c->log), sizeof c->log - strlen(c->log), "error(%s) ", message);
	c->n++;
}

static void test_call_order_and_counts(void **state)
{
	struct calls c = {0};
	zkw_handlers h = {.valid = on_valid, .config = on_config, .error = on_error, .ctx = &c};
	zkw_delivery d = {0};
	unsigned bits;

	(void)state;
	bits = zkw_delivery_next(&d, true, 7, "");
	assert_int_equal(zkw_delivery_call(&d, bits, &h, "abc", 3, NULL), 2);
	bits = zkw_delivery_next(&d, false, 7, "gone");
	assert_int_equal(zkw_delivery_call(&d, bits, &h, "abc", 3, NULL), 2);
	assert_string_equal(c.log, "config(abc) valid(1) valid(0) error(gone) ");

	/* NULL handlers are skipped and not counted; NULL content is "". */
	h.valid = NULL;
	c.log[0] = '\0';
	assert_int_equal(zkw_delivery_call(&d, ZKW_DELIVER_CONFIG | ZKW_DELIVER_VALID | ZKW_DELIVER_ERROR, &h,
	                                   NULL, 0, NULL),
	                 2);
	assert_string_equal(c.log, "config() error(gone) ");
}

static void test_call_stops_between_handlers(void **state)
{
	struct calls c = {0};
	zkw_handlers h = {.valid = on_valid, .config = on_config, .error = on_error, .ctx = &c};
	zkw_delivery d = {0};
	unsigned bits = zkw_delivery_next(&d, true, 1, "");

	(void)state;
	/* A stop from inside config(): valid() does not follow. */
	c.stop_in_config = true;
	assert_int_equal(zkw_delivery_call(&d, bits, &h, "x", 1, &c.stop), 1);
	assert_string_equal(c.log, "config(x) ");
	/* Stopped before: nothing at all. */
	assert_int_equal(zkw_delivery_call(&d, bits, &h, "x", 1, &c.stop), 0);
	assert_int_equal(c.n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_success_config_then_valid),
	        cmocka_unit_test(test_failure_valid_then_error),
	        cmocka_unit_test(test_long_error_is_cut),
	        cmocka_unit_test(test_call_order_and_counts),
	        cmocka_unit_test(test_call_stops_between_handlers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
