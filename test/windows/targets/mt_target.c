/* 8 threads allocate, then each frees (after checking) the blocks of the
 * next one: cross-thread frees. Knows nothing of Granule; with
 * GRANULE_TEST_EXPECT=1 it checks blocks are Granule's. Exit 7 on success. */
#include <string.h>

#include "target_common.h"

#define THREADS 8
#define PER_THREAD 20000

static unsigned char* g_blocks[THREADS][PER_THREAD];
static size_t g_sizes[THREADS][PER_THREAD];
static volatile LONG g_ready;
static volatile LONG g_bad;
static int g_expect;

static DWORD WINAPI worker(LPVOID arg) {
  int t = (int)(INT_PTR)arg, i, victim;
  unsigned x = 12345u + (unsigned)t;
  for (i = 0; i < PER_THREAD; ++i) {
    x = x * 1664525u + 1013904223u;
    g_sizes[t][i] = (x >> 8) % 1500 + 1;
    g_blocks[t][i] = malloc(g_sizes[t][i]);
    if (!g_blocks[t][i]) {
      InterlockedIncrement(&g_bad);
      continue;
    }
    if (g_expect && i % 97 == 0 && !(g_owns && g_owns(g_blocks[t][i])))
      InterlockedIncrement(&g_bad);
    memset(g_blocks[t][i], (unsigned char)(t * 31 + i), g_sizes[t][i]);
  }
  InterlockedIncrement(&g_ready);
  while (g_ready < THREADS) Sleep(0);
  victim = (t + 1) % THREADS;
  for (i = 0; i < PER_THREAD; ++i) {
    unsigned char* b = g_blocks[victim][i];
    unsigned char want = (unsigned char)(victim * 31 + i);
    if (!b) continue;
    if (b[0] != want || b[g_sizes[victim][i] - 1] != want) InterlockedIncrement(&g_bad);
    if (i % 3 == 0) b = realloc(b, g_sizes[victim][i] * 2);
    free(b);
  }
  return 0;
}

int main(void) {
  HANDLE threads[THREADS];
  int t;
  target_init();
  g_expect = expecting_granule();
  if (g_expect && !g_owns) return 90;
  for (t = 0; t < THREADS; ++t)
    threads[t] = CreateThread(NULL, 0, worker, (LPVOID)(INT_PTR)t, 0, NULL);
  WaitForMultipleObjects(THREADS, threads, TRUE, INFINITE);
  for (t = 0; t < THREADS; ++t) CloseHandle(threads[t]);
  check("8 threads, 160000 blocks, cross-thread frees", g_bad == 0);
  printf("mt-target: %d failures\n", g_failures);
  fflush(stdout);
  return g_failures ? 1 : 7;
}
