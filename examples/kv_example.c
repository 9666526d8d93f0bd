/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* examples/kv_example.c -- a small program using the installed libevkv
 * client library:
 *
 *   cc kv_example.c $(pkg-config --cflags --libs libevkv-client) -o kv_example
 *   ./kv_example [HOST [PORT]]
 *
 * It stores a counter and a greeting, reads them back with one MGET and
 * prints them; exit 0 when every answer is what it expects. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kv_client.h>
#include <kv_err.h>

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    unsigned long port = argc > 2 ? strtoul(argv[2], NULL, 10) : 7379;
    struct kv_bytes keys[3] = {{"example:greeting", 16}, {"example:counter", 15},
                               {"example:missing", 15}};
    struct kv_value vals[3];
    struct kv_client *c;
    int64_t n = 0;
    int rc;

    if (port == 0 || port > 65535) {
        fprintf(stderr, "kv_example: bad port\n");
        return 2;
    }
    rc = kv_client_connect(host, (uint16_t)port, 2000, &c);
    if (rc != 0) {
        fprintf(stderr, "kv_example: cannot connect to %s:%lu: %s\n", host, port,
                kv_strerror(rc));
        return 2;
    }
    rc = kv_client_set(c, "example:greeting", 16, "hello", 5, NULL, NULL);
    if (rc == 0)
        rc = kv_client_del1(c, "example:counter", 15, NULL);
    if (rc == 0 || rc == KV_ENOTFOUND)
        rc = kv_client_incr(c, "example:counter", 15, 41, &n, NULL);
    if (rc == 0)
        rc = kv_client_incr(c, "example:counter", 15, 1, &n, NULL);
    if (rc == 0)
        rc = kv_client_mget(c, keys, 3, vals);
    if (rc != 0) {
        fprintf(stderr, "kv_example: %s (status %s)\n", kv_strerror(rc),
                kv_client_last_status(c) >= 0
                    ? kv_status_name((unsigned)kv_client_last_status(c)) : "none");
        kv_client_close(c);
        return 1;
    }
    for (int i = 0; i < 3; i++)
        printf("%.*s = %s%.*s%s\n", (int)keys[i].len, (const char *)keys[i].data,
               vals[i].found ? "\"" : "(nil)", vals[i].found ? (int)vals[i].len : 0,
               vals[i].found ? (const char *)vals[i].data : "", vals[i].found ? "\"" : "");
    rc = n == 42 && vals[0].found && strcmp((char *)vals[0].data, "hello") == 0 &&
                 vals[1].found && strcmp((char *)vals[1].data, "42") == 0 && !vals[2].found
             ? 0
             : 1;
    kv_client_values_free(vals, 3);
    kv_client_close(c);
    return rc;
}
