/* SPDX-License-Identifier: MIT */
/*
 * test_fmt: snprintf/vsnprintf/printf as the daemon uses them. In the static
 * musl build these are vu.c's own (CONFIG_VUV_SMALL_PRINTF); in the ASan
 * build glibc's, which checks the expected strings themselves are standard C.
 * Prints "PASS/FAIL name" and "N passed, M failed".
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;
/* Through a pointer, so that gcc cannot fold the calls at compile time. */
static int (*volatile fmt)(char *, size_t, const char *, ...) = snprintf;

#define T(want, ...) do {							\
	char b[256];								\
	int r = fmt(b, sizeof(b), __VA_ARGS__);					\
	if (r == (int)strlen(want) && !strcmp(b, want)) {			\
		passed++;							\
	} else {								\
		printf("FAIL %s: got '%s' (%d), want '%s'\n", #__VA_ARGS__, b, r, want); \
		failed++;							\
	}									\
} while (0)

int main(void)
{
	char small[8];
	int n;

	T("plain", "plain");
	T("100%", "100%%");
	T("0 1 4294967295", "%u %u %u", 0u, 1u, 4294967295u);
	T("-2147483648 0 2147483647", "%d %d %d", INT32_MIN, 0, INT32_MAX);
	T("-9223372036854775808", "%lld", (long long)INT64_MIN);
	T("18446744073709551615", "%llu", (unsigned long long)UINT64_MAX);
	T("ffffffffffffffff 0", "%llx %llx", (unsigned long long)UINT64_MAX, 0ull);
	T("123456789 -5", "%zu %ld", (size_t)123456789, -5l);
	T("deadbeef DEADBEEF 0x1f 0", "%x %X %#x %#x", 0xdeadbeefu, 0xdeadbeefu, 0x1fu, 0u);
	T("[   42] [42   ] [00042] [  -42] [-0042]", "[%5d] [%-5d] [%05d] [%5d] [%05d]", 42, 42, 42,
	  -42, -42);
	T("[007] [  007] [] [1]", "[%.3d] [%5.3u] [%.0d] [%.0x]", 7, 7u, 0, 1u);
	T("+3 -3  3", "%+d %+d % d", 3, -3, 3);
	T("[abc] [ab] [  abc] [abc  ] [a]", "[%s] [%.2s] [%5s] [%-5s] [%.*s]", "abc", "abc", "abc",
	  "abc", 1, "abc");
	T("[    x] [-1]", "[%*s] [%d]", 5, "x", -1);
	T("x", "%c", 'x');
	T("17 0x10", "%o %p", 15u, (void *)0x10);
	T("255 65535 -1 -1", "%hhu %hu %hhd %hd", 255, 65535, 255, 65535);
	T("fourcc FWHT, 640x480", "fourcc %.4s, %ux%u", "FWHTxx", 640u, 480u);
	/* truncation: NUL-terminated, the return value is the full length */
	n = fmt(small, sizeof(small), "%s-%u", "abcdef", 12345u);
	if (n == 12 && !strcmp(small, "abcdef-")) {
		passed++;
	} else {
		printf("FAIL truncation: '%s' %d\n", small, n);
		failed++;
	}
	n = fmt(NULL, 0, "%u", 1234u);
	if (n == 4) {
		passed++;
	} else {
		printf("FAIL snprintf(NULL, 0): %d\n", n);
		failed++;
	}
	printf("PASS %d formats\n", passed);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
