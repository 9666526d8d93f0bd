/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_install.c -- the installed tree, as a user gets it:
 * `cmake --install` of this build into a temporary prefix puts the programs,
 * the client library (shared and static, headers, pkg-config file), man
 * pages and the systemd unit in their places; examples/kv_example.c builds
 * against that prefix through pkg-config, both ways, and runs against the
 * installed server. */
#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_test_util.h"

static char tmp[64], prefix[128], pcpath[256];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "command failed (%d): %s\n", st, cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int installed(const char *rel)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", prefix, rel);
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "not installed: %s\n", path);
        return 0;
    }
    return 1;
}

static char *read_installed(const char *rel)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", prefix, rel);
    return kv_test_slurp(path);
}

static int suite_init(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/test_install.%d", (int)getpid());
    snprintf(prefix, sizeof(prefix), "%s/prefix", tmp);
    snprintf(pcpath, sizeof(pcpath), "PKG_CONFIG_PATH=%s/lib/pkgconfig", prefix);
    if (mkdir(tmp, 0700) != 0)
        return -1;
    return sh("cmake --install '%s' --prefix '%s' > '%s/install.log' 2>&1", KV_BUILD_DIR, prefix,
              tmp) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    return sh("rm -rf '%s'", tmp) == 0 ? 0 : -1;
}

static void test_install_puts_everything_in_place(void)
{
    static const char *const files[] = {
        "bin/libevkv", "bin/kvclient", "lib/libevkv-client.so", "lib/libevkv-client.so.0",
        "lib/libevkv-client.a", "include/libevkv/kv_client.h", "include/libevkv/frame.h",
        "include/libevkv/kv_call.h", "include/libevkv/kv_err.h",
        "lib/pkgconfig/libevkv-client.pc", "share/man/man1/libevkv.1",
        "share/man/man1/kvclient.1", "lib/systemd/system/libevkv.service",
        "share/doc/libevkv/LICENSE", "share/doc/libevkv/kv_example.c",
        "share/doc/libevkv/libevkv.default", "share/doc/libevkv/libevkv.logrotate",
    };
    char *text;

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        CU_ASSERT(installed(files[i]));
    /* the man pages carry the programs' own --help */
    text = read_installed("share/man/man1/libevkv.1");
    CU_ASSERT(text && strstr(text, ".TH LIBEVKV 1") && strstr(text, "--log-file PATH") &&
              strstr(text, ".SH EXIT STATUS"));
    free(text);
    text = read_installed("share/man/man1/kvclient.1");
    CU_ASSERT(text && strstr(text, ".TH KVCLIENT 1") && strstr(text, "mget KEY...") &&
              strstr(text, ".SH EXIT STATUS"));
    free(text);
    /* the pkg-config file names the prefix it was installed to */
    CU_ASSERT_EQUAL(sh("[ \"$(%s pkg-config --variable=prefix libevkv-client)\" = '%s' ]", pcpath,
                       prefix), 0);
    CU_ASSERT_EQUAL(sh("%s pkg-config --modversion libevkv-client | grep -qx '%s'", pcpath,
                       KV_VERSION), 0);
    /* each installed header compiles on its own, as the first and only include */
    CU_ASSERT_EQUAL(sh("cd '%s' && for h in '%s'/include/libevkv/*.h; do printf '#include "
                       "<libevkv/%%s>\\nint main(void) { return 0; }\\n' \"$(basename \"$h\")\" "
                       "> hdr.c && cc -std=c99 -Wall -Wextra -Werror -pedantic -I'%s/include' -c "
                       "hdr.c -o hdr.o || { echo \"does not compile alone: $h\"; exit 1; }; done",
                       tmp, prefix, prefix), 0);
    /* the shared library exports the API and nothing of its insides */
    CU_ASSERT_EQUAL(sh("nm -D --defined-only '%s/lib/libevkv-client.so' | "
                       "grep -q ' kv_client_connect@@'", prefix), 0);
    CU_ASSERT_EQUAL(sh("! nm -D --defined-only '%s/lib/libevkv-client.so' | grep -q ' kv_mem_'",
                       prefix), 0);
}

static void test_install_systemd_unit(void)
{
    char want[256];
    char *text = read_installed("lib/systemd/system/libevkv.service");

    CU_ASSERT_FATAL(text != NULL);
    snprintf(want, sizeof(want), "ExecStart=%s/bin/libevkv ", prefix);
    CU_ASSERT(strstr(text, want) != NULL);
    CU_ASSERT(strstr(text, "\nType=notify\n") != NULL);
    CU_ASSERT(strstr(text, "\nStateDirectory=libevkv\n") != NULL);
    CU_ASSERT(strstr(text, "--data-file /var/lib/libevkv/store") != NULL);
    CU_ASSERT(strstr(text, "ExecReload=/bin/kill -HUP $MAINPID") != NULL);
    /* a --unix socket under the unit has a writable place: /run/libevkv */
    CU_ASSERT(strstr(text, "\nRuntimeDirectory=libevkv\n") != NULL);
    CU_ASSERT(strstr(text, "\nSystemCallFilter=@system-service\n") != NULL);
    free(text);
    /* the hardening a Debian packager adds: systemd's own exposure score at most 2.0
     * ("OK"); the unit before them scored 6.9 ("MEDIUM") */
    if (access("/usr/bin/systemd-analyze", X_OK) == 0 &&
        system("systemd-analyze security --help 2>/dev/null | grep -q -- --offline") == 0)
        CU_ASSERT_EQUAL(sh("SYSTEMD_LOG_LEVEL=err systemd-analyze security --offline=yes "
                           "--threshold=20 '%s/lib/systemd/system/libevkv.service' > "
                           "'%s/security.log' 2>&1 || { grep -E 'Overall|\xe2\x9c\x97' "
                           "'%s/security.log'; false; }", prefix, tmp, tmp), 0);
    /* systemd's own check of the unit file, when systemd-analyze is there */
    if (access("/usr/bin/systemd-analyze", X_OK) == 0)
        CU_ASSERT_EQUAL(sh("MANPATH='%s/share/man' SYSTEMD_LOG_LEVEL=err systemd-analyze "
                           "verify --man=$(command -v man >/dev/null && echo yes || echo no) "
                           "'%s/lib/systemd/system/libevkv.service' > '%s/verify.log' 2>&1 || "
                           "{ cat '%s/verify.log'; false; }",
                           prefix, prefix, tmp, tmp), 0);
}

/* Builds the example against the prefix, shared and static, and runs both
 * against the installed server. */
static void test_install_example_builds_and_runs(void)
{
    struct kv_test_server s = {0};
    char server[512], out[256];
    char *text;

    CU_ASSERT_EQUAL_FATAL(
        sh("cc -Wall -Werror " KV_EXAMPLE_CFLAGS " '%s/examples/kv_example.c' $(%s pkg-config "
           "--cflags --libs libevkv-client) -Wl,-rpath,'%s/lib' -o '%s/kv_example_shared'",
           KV_SOURCE_DIR, pcpath, prefix, tmp), 0);
    CU_ASSERT_EQUAL_FATAL(
        sh("cc -Wall -Werror " KV_EXAMPLE_CFLAGS " '%s/examples/kv_example.c' $(%s pkg-config "
           "--cflags libevkv-client) -o '%s/kv_example_static' '%s/lib/libevkv-client.a' "
           "$(%s pkg-config --static --libs libevkv-client | sed 's/-levkv-client//')",
           KV_SOURCE_DIR, pcpath, tmp, prefix, pcpath), 0);
    /* the static one does not need the shared library */
    CU_ASSERT_EQUAL(sh("! ldd '%s/kv_example_static' | grep -q evkv-client", tmp), 0);
    CU_ASSERT_EQUAL(sh("ldd '%s/kv_example_shared' | grep -q '%s/lib/libevkv-client.so.0'", tmp,
                       prefix), 0);

    snprintf(server, sizeof(server), "%s/bin/libevkv", prefix);
    setenv("LIBEVKV_BIN", server, 1);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    unsetenv("LIBEVKV_BIN");
    snprintf(out, sizeof(out), "%s/example.out", tmp);
    CU_ASSERT_EQUAL(sh("'%s/kv_example_shared' 127.0.0.1 %u > '%s'", tmp, s.port, out), 0);
    text = kv_test_slurp(out);
    CU_ASSERT(text && strcmp(text, "example:greeting = \"hello\"\nexample:counter = \"42\"\n"
                                   "example:missing = (nil)\n") == 0);
    free(text);
    CU_ASSERT_EQUAL(sh("'%s/kv_example_static' 127.0.0.1 %u > '%s'", tmp, s.port, out), 0);
    text = kv_test_slurp(out);
    CU_ASSERT(text && strstr(text, "example:counter = \"42\"\n") != NULL);
    free(text);
    /* and the installed kvclient sees what the example wrote */
    CU_ASSERT_EQUAL(sh("'%s/bin/kvclient' -p %u get example:greeting | grep -qx hello", prefix,
                       s.port), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* Every source file names its license in one line near its top: C, headers, scripts,
 * CMake, proto, and what packaging installs (unit, pkg-config, version script, man
 * page sources). Data files (fuzz inputs, fixtures, bench results) are not sources. */
static void test_install_every_source_file_names_the_license(void)
{
    CU_ASSERT_EQUAL(
        sh("cd '%s' && bad=0 && for f in CMakeLists.txt autobuild.sh .ci/run $(find src unittest "
           "tests bench fuzz examples man packaging proto -type f \\( -name '*.c' -o -name '*.h' "
           "-o -name '*.sh' -o -name '*.py' -o -name '*.cmake' -o -name '*.proto' -o -name "
           "'*.in' -o -name '*.map' -o -path 'packaging/*' \\) -not -path 'fuzz/corpus/*' -not "
           "-path 'fuzz/regressions/*' -not -path 'unittest/fixtures/*' -not -path "
           "'bench/results/*'); do head -n 3 \"$f\" | grep -q 'SPDX-License-Identifier: "
           "BSD-3-Clause' || { echo \"no SPDX line: $f\" >&2; bad=1; }; done; "
           "grep -q 'BSD 3-Clause License' LICENSE && exit $bad",
           KV_SOURCE_DIR), 0);
}

/* libevkv-client.a of a release build (the one `./autobuild.sh install` makes, link-time
 * optimised) holds machine code, not only GCC's LTO bytecode: a program linked with
 * another compiler, or without the LTO plugin, finds its symbols. */
static void test_install_release_static_library_has_code(void)
{
    CU_ASSERT_EQUAL_FATAL(
        sh("cmake -S '%s' -B '%s/rel' -DCMAKE_BUILD_TYPE=Release '-DCMAKE_C_FLAGS_RELEASE=-O2 "
           "-DNDEBUG' -DKV_BIN_DIR='%s/rel/bin' > '%s/rel.log' 2>&1 && cmake --build '%s/rel' "
           "--target evkv_client_static >> '%s/rel.log' 2>&1 || { tail -n 20 '%s/rel.log'; "
           "false; }", KV_SOURCE_DIR, tmp, tmp, tmp, tmp, tmp, tmp), 0);
    /* every member has a .text of its own */
    CU_ASSERT_EQUAL(sh("size '%s/rel/lib/libevkv-client.a' > '%s/size.out' && cat '%s/size.out' "
                       "| awk 'NR > 1 && $1 == 0 { print \"no code: \" $0; bad = 1 } END "
                       "{ exit bad }'", tmp, tmp, tmp), 0);
    /* what a user of another compiler does, when there is one */
    if (system("command -v clang >/dev/null 2>&1") == 0)
        CU_ASSERT_EQUAL(sh("clang -I'%s/src/client' -I'%s/src/io' -I'%s/src/mem' "
                           "'%s/examples/kv_example.c' '%s/rel/lib/libevkv-client.a' "
                           "-lprotobuf-c -lz -lm -lpthread -o '%s/kv_example_clang'",
                           KV_SOURCE_DIR, KV_SOURCE_DIR, KV_SOURCE_DIR, KV_SOURCE_DIR, tmp,
                           tmp), 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_install_puts_everything_in_place", test_install_puts_everything_in_place},
        {"test_install_systemd_unit", test_install_systemd_unit},
        {"test_install_example_builds_and_runs", test_install_example_builds_and_runs},
        {"test_install_every_source_file_names_the_license",
         test_install_every_source_file_names_the_license},
        {"test_install_release_static_library_has_code",
         test_install_release_static_library_has_code},
    };

    return kv_test_run_suite("install", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
