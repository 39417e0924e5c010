// Vulkan compute for Sluice: loader opened with dlopen, one logical device per context, storage
// buffers, SPIR-V kernels dispatched with push constants, completion on a timeline semaphore.
// Without the Vulkan headers at build time, every entry point reports that Vulkan was not built in
// (SK_FORCE_NO_VULKAN builds that variant on a machine that has them: `clang -fsyntax-only -DSK_FORCE_NO_VULKAN`).
#include "sk_vulkan.h"
#include <stdio.h>
#include <string.h>

#if __has_include(<vulkan/vulkan.h>) && !defined(SK_FORCE_NO_VULKAN)
#define SK_HAVE_VULKAN 1
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <pthread.h>
#include "vk_internal.h"
#endif

static void set_error(char *error, size_t len, const char *msg) {
    if (error && len) { snprintf(error, len, "%s", msg); }
}

#ifndef SK_HAVE_VULKAN

int sk_vk_available(char *e, size_t n) { set_error(e, n, "this build of Sluice has no Vulkan support (the Vulkan headers were absent at build time)"); return -1; }
int sk_vk_device_count(char *e, size_t n) { return sk_vk_available(e, n), -1; }
int sk_vk_device_info_at(int i, sk_vk_device_info *o, char *e, size_t n) { (void)i; (void)o; return sk_vk_available(e, n); }
sk_vk_context *sk_vk_open(int i, char *e, size_t n) { (void)i; sk_vk_available(e, n); return NULL; }
void sk_vk_close(sk_vk_context *c) { (void)c; }
int sk_vk_has_transfer_queue(const sk_vk_context *c) { (void)c; return 0; }
void sk_vk_force_unmapped(sk_vk_context *c, int on) { (void)c; (void)on; }
sk_vk_buffer *sk_vk_buffer_create(sk_vk_context *c, uint64_t b, char *e, size_t n) { (void)c; (void)b; sk_vk_available(e, n); return NULL; }
void sk_vk_buffer_destroy(sk_vk_context *c, sk_vk_buffer *b) { (void)c; (void)b; }
uint64_t sk_vk_buffer_size(const sk_vk_buffer *b) { (void)b; return 0; }
uint64_t sk_vk_buffer_allocated(const sk_vk_buffer *b) { (void)b; return 0; }
uint64_t sk_vk_allocation_granularity(sk_vk_context *c) { (void)c; return 1; }
void *sk_vk_buffer_mapped(const sk_vk_buffer *b) { (void)b; return NULL; }
uint64_t sk_vk_copy_pieces(sk_vk_context *c, sk_vk_buffer *d, const sk_vk_piece *p, uint32_t k, uint64_t a, char *e, size_t n) { (void)c; (void)d; (void)p; (void)k; (void)a; sk_vk_available(e, n); return 0; }
int sk_vk_buffer_host_sync(sk_vk_context *c, sk_vk_buffer *b, char *e, size_t n) { (void)c; (void)b; return sk_vk_available(e, n); }
void sk_vk_buffer_retire(sk_vk_context *c, sk_vk_buffer *b) { (void)c; (void)b; }
uint64_t sk_vk_compute_mark(sk_vk_context *c) { (void)c; return 0; }
int sk_vk_finish(sk_vk_context *c, char *e, size_t n) { (void)c; return sk_vk_available(e, n); }
int sk_vk_wait(sk_vk_context *c, uint64_t v, char *e, size_t n) { (void)c; (void)v; return sk_vk_available(e, n); }
void sk_vk_get_memory_stats(sk_vk_context *c, sk_vk_memory_stats *o) { (void)c; memset(o, 0, sizeof *o); }
void sk_vk_reset_peak(sk_vk_context *c) { (void)c; }
void sk_vk_trace(sk_vk_context *c, int on) { (void)c; (void)on; }
uint32_t sk_vk_trace_read(sk_vk_context *c, sk_vk_trace_entry *o, uint32_t cap) { (void)c; (void)o; (void)cap; return 0; }
void sk_vk_skip_copy_waits(sk_vk_context *c, int on) { (void)c; (void)on; }
int sk_vk_copy_wait(sk_vk_context *c, uint64_t v, char *e, size_t n) { (void)c; (void)v; return sk_vk_available(e, n); }
uint64_t sk_vk_staging_bytes(const sk_vk_context *c) { (void)c; return 0; }
uint64_t sk_vk_dispatch_count(const sk_vk_context *c, sk_vk_kernel k) { (void)c; (void)k; return 0; }
void sk_vk_get_counters(const sk_vk_context *c, sk_vk_counters *o) { (void)c; memset(o, 0, sizeof *o); }
int sk_vk_upload(sk_vk_context *c, sk_vk_buffer *b, uint64_t o, const void *s, uint64_t l, char *e, size_t n) { (void)c; (void)b; (void)o; (void)s; (void)l; return sk_vk_available(e, n); }
int sk_vk_download(sk_vk_context *c, sk_vk_buffer *b, uint64_t o, void *d, uint64_t l, char *e, size_t n) { (void)c; (void)b; (void)o; (void)d; (void)l; return sk_vk_available(e, n); }
int sk_vk_dispatch(sk_vk_context *c, sk_vk_kernel k, const sk_vk_binding *b, uint32_t bc, const void *p, uint32_t pb, uint32_t x, uint32_t y, uint32_t z, char *e, size_t n) {
    (void)c; (void)k; (void)b; (void)bc; (void)p; (void)pb; (void)x; (void)y; (void)z; return sk_vk_available(e, n);
}

#else

// ---- loader and instance (one per process) ----

#define DECLARE(fn) static PFN_##fn p_##fn;
GLOBAL_FNS(DECLARE)
INSTANCE_FNS(DECLARE)
static PFN_vkGetInstanceProcAddr p_vkGetInstanceProcAddr;
static VkInstance g_instance;
static char g_error[512];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void load_instance(void) {
    void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) { snprintf(g_error, sizeof g_error, "no Vulkan loader (libvulkan.so.1 not found: install libvulkan1 and a driver, e.g. mesa-vulkan-drivers)"); return; }
    p_vkGetInstanceProcAddr = (PFN_vkGetInstanceProcAddr)dlsym(lib, "vkGetInstanceProcAddr");
    if (!p_vkGetInstanceProcAddr) { snprintf(g_error, sizeof g_error, "the Vulkan loader lacks vkGetInstanceProcAddr"); return; }
#define LOAD_GLOBAL(fn) p_##fn = (PFN_##fn)p_vkGetInstanceProcAddr(NULL, #fn);
    GLOBAL_FNS(LOAD_GLOBAL)
    uint32_t version = VK_API_VERSION_1_0;
    if (p_vkEnumerateInstanceVersion) p_vkEnumerateInstanceVersion(&version);
    if (VK_API_VERSION_MINOR(version) < 2 && VK_API_VERSION_MAJOR(version) == 1) {
        snprintf(g_error, sizeof g_error, "the Vulkan loader is version 1.%u; Sluice needs 1.2", VK_API_VERSION_MINOR(version));
        return;
    }
    VkApplicationInfo app = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "sluice", .apiVersion = VK_API_VERSION_1_2 };
    VkInstanceCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    VkResult r = p_vkCreateInstance(&ci, NULL, &g_instance);
    if (r != VK_SUCCESS) { snprintf(g_error, sizeof g_error, "vkCreateInstance failed (%d)", r); g_instance = NULL; return; }
#define LOAD_INSTANCE(fn) p_##fn = (PFN_##fn)p_vkGetInstanceProcAddr(g_instance, #fn);
    INSTANCE_FNS(LOAD_INSTANCE)
}

int sk_vk_available(char *error, size_t len) {
    pthread_once(&g_once, load_instance);
    if (!g_instance) { set_error(error, len, g_error); return -1; }
    return 0;
}

static int physical_devices(VkPhysicalDevice *out, uint32_t *count, char *error, size_t len) {
    if (sk_vk_available(error, len) != 0) return -1;
    *count = 16;
    VkResult r = p_vkEnumeratePhysicalDevices(g_instance, count, out);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) { set_error(error, len, "vkEnumeratePhysicalDevices failed"); return -1; }
    return 0;
}

int sk_vk_device_count(char *error, size_t len) {
    VkPhysicalDevice devs[16];
    uint32_t n = 0;
    if (physical_devices(devs, &n, error, len) != 0) return -1;
    return (int)n;
}

static int has_extension(VkPhysicalDevice pd, const char *name) {
    uint32_t n = 0;
    p_vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
    VkExtensionProperties *props = calloc(n ? n : 1, sizeof *props);
    p_vkEnumerateDeviceExtensionProperties(pd, NULL, &n, props);
    int found = 0;
    for (uint32_t i = 0; i < n; i++) if (strcmp(props[i].extensionName, name) == 0) found = 1;
    free(props);
    return found;
}

int sk_vk_device_info_at(int index, sk_vk_device_info *out, char *error, size_t len) {
    VkPhysicalDevice devs[16];
    uint32_t n = 0;
    if (physical_devices(devs, &n, error, len) != 0) return -1;
    if (index < 0 || (uint32_t)index >= n) { set_error(error, len, "no such Vulkan device"); return -1; }
    VkPhysicalDevice pd = devs[index];
    memset(out, 0, sizeof *out);
    VkPhysicalDeviceDriverProperties driver = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
    VkPhysicalDeviceSubgroupProperties subgroup = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &driver };
    VkPhysicalDeviceProperties2 props = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup };
    p_vkGetPhysicalDeviceProperties2(pd, &props);
    snprintf(out->name, sizeof out->name, "%s", props.properties.deviceName);
    snprintf(out->driver, sizeof out->driver, "%s %s", driver.driverName, driver.driverInfo);
    out->type = (int)props.properties.deviceType;
    out->api_version = props.properties.apiVersion;
    out->max_storage_buffer_range = props.properties.limits.maxStorageBufferRange;
    out->min_storage_offset_alignment = props.properties.limits.minStorageBufferOffsetAlignment;
    out->subgroup_size = subgroup.subgroupSize;
    out->has_memory_budget = has_extension(pd, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    VkPhysicalDeviceMemoryBudgetPropertiesEXT budget = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT };
    VkPhysicalDeviceMemoryProperties2 mem = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                               .pNext = out->has_memory_budget ? &budget : NULL };
    p_vkGetPhysicalDeviceMemoryProperties2(pd, &mem);
    out->heap_count = mem.memoryProperties.memoryHeapCount < 16 ? mem.memoryProperties.memoryHeapCount : 16;
    for (uint32_t i = 0; i < out->heap_count; i++) {
        VkMemoryHeap h = mem.memoryProperties.memoryHeaps[i];
        out->heaps[i].size = h.size;
        out->heaps[i].device_local = (h.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0;
        // Without VK_EXT_memory_budget: the heap less a reserve (a tenth, at most 1 GiB).
        uint64_t reserve = h.size / 10 < (1ull << 30) ? h.size / 10 : (1ull << 30);
        out->heaps[i].budget = out->has_memory_budget ? budget.heapBudget[i] : h.size - reserve;
    }
    uint32_t fc = 16;
    VkQueueFamilyProperties fams[16];
    p_vkGetPhysicalDeviceQueueFamilyProperties(pd, &fc, fams);
    out->family_count = fc;
    for (uint32_t i = 0; i < fc; i++) {
        out->families[i].count = fams[i].queueCount;
        out->families[i].graphics = (fams[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) != 0;
        out->families[i].compute = (fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT) != 0;
        out->families[i].transfer = (fams[i].queueFlags & VK_QUEUE_TRANSFER_BIT) != 0;
    }
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES };
    VkPhysicalDeviceFeatures2 f = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12 };
    p_vkGetPhysicalDeviceFeatures2(pd, &f);
    out->has_timeline_semaphore = f12.timelineSemaphore;
    return 0;
}

// ---- context ----

const uint32_t kernel_buffers[SK_VK_KERNEL_COUNT] = { 3, 2, 4, 4, 4, 2, 4, 2, 5, 4 };

int sk_vk_check(VkResult r, const char *what, char *error, size_t len) {
    if (r == VK_SUCCESS) return 0;
    char msg[256];
    snprintf(msg, sizeof msg, "%s failed (VkResult %d%s)", what, r,
             r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? ": out of device memory" : r == VK_ERROR_OUT_OF_HOST_MEMORY ? ": out of host memory" : "");
    set_error(error, len, msg);
    return -1;
}

sk_vk_context *sk_vk_open(int index, char *error, size_t len) {
    VkPhysicalDevice devs[16];
    uint32_t n = 0;
    if (physical_devices(devs, &n, error, len) != 0) return NULL;
    if (index < 0 || (uint32_t)index >= n) { set_error(error, len, "no such Vulkan device"); return NULL; }
    sk_vk_context *c = calloc(1, sizeof *c);
    c->physical = devs[index];
    VkPhysicalDeviceProperties props;
    p_vkGetPhysicalDeviceProperties(c->physical, &props);
    c->max_range = props.limits.maxStorageBufferRange;
    c->min_alignment = props.limits.minStorageBufferOffsetAlignment ? props.limits.minStorageBufferOffsetAlignment : 1;
    p_vkGetPhysicalDeviceMemoryProperties(c->physical, &c->memory);
    uint32_t fc = 16;
    VkQueueFamilyProperties fams[16];
    p_vkGetPhysicalDeviceQueueFamilyProperties(c->physical, &fc, fams);
    c->compute_family = UINT32_MAX;
    c->transfer_family = UINT32_MAX;
    for (uint32_t i = 0; i < fc; i++) {
        if ((fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && c->compute_family == UINT32_MAX) c->compute_family = i;
        // A transfer-only family is the copy engine of discrete GPUs.
        if ((fams[i].queueFlags & VK_QUEUE_TRANSFER_BIT) && !(fams[i].queueFlags & (VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT))
            && c->transfer_family == UINT32_MAX) c->transfer_family = i;
    }
    if (c->compute_family == UINT32_MAX) { set_error(error, len, "the device has no compute queue"); free(c); return NULL; }
    c->separate_transfer = c->transfer_family != UINT32_MAX;
    if (!c->separate_transfer) c->transfer_family = c->compute_family;
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queues[2] = {
        { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = c->compute_family, .queueCount = 1, .pQueuePriorities = &priority },
        { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = c->transfer_family, .queueCount = 1, .pQueuePriorities = &priority },
    };
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .timelineSemaphore = VK_TRUE };
    // VK_EXT_memory_budget where present: the heaps' usage as the driver counts it (memory stats).
    c->memory_budget = has_extension(c->physical, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    const char *extensions[] = { VK_EXT_MEMORY_BUDGET_EXTENSION_NAME };
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f12,
                               .queueCreateInfoCount = c->separate_transfer ? 2 : 1, .pQueueCreateInfos = queues,
                               .enabledExtensionCount = c->memory_budget ? 1 : 0, .ppEnabledExtensionNames = extensions };
    if (sk_vk_check(p_vkCreateDevice(c->physical, &dci, NULL, &c->device), "vkCreateDevice", error, len)) { free(c); return NULL; }
#define LOAD_DEVICE(fn) c->fn = (PFN_##fn)p_vkGetDeviceProcAddr(c->device, #fn);
    DEVICE_FNS(LOAD_DEVICE)
    c->vkGetDeviceQueue(c->device, c->compute_family, 0, &c->compute);
    c->vkGetDeviceQueue(c->device, c->transfer_family, 0, &c->transfer);
    VkCommandPoolCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, .queueFamilyIndex = c->compute_family };
    VkCommandPoolCreateInfo tpci = pci;
    tpci.queueFamilyIndex = c->transfer_family;
    VkSemaphoreTypeCreateInfo sti = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO, .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE };
    VkSemaphoreCreateInfo sci = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &sti };
    if (sk_vk_check(c->vkCreateCommandPool(c->device, &pci, NULL, &c->pool), "vkCreateCommandPool", error, len)
        || sk_vk_check(c->vkCreateCommandPool(c->device, &tpci, NULL, &c->transfer_pool), "vkCreateCommandPool", error, len)
        || sk_vk_check(c->vkCreateSemaphore(c->device, &sci, NULL, &c->timeline), "vkCreateSemaphore (timeline)", error, len)
        || sk_vk_check(c->vkCreateSemaphore(c->device, &sci, NULL, &c->copy_timeline), "vkCreateSemaphore (copy timeline)", error, len)) {
        sk_vk_close(c);
        return NULL;
    }
    VkCommandBufferAllocateInfo tcai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->transfer_pool,
                                         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
    c->pool_current = -1;
    c->chunk_current = -1;
    for (int i = 0; i < SK_STAGING_SLOTS; i++) {
        if (sk_vk_check(c->vkAllocateCommandBuffers(c->device, &tcai, &c->staging[i].cmd), "vkAllocateCommandBuffers", error, len)) {
            sk_vk_close(c);
            return NULL;
        }
    }
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void sk_vk_close(sk_vk_context *c) {
    if (!c) return;
    if (c->device) {
        c->vkDeviceWaitIdle(c->device);
        for (int k = 0; k < SK_VK_KERNEL_COUNT; k++) {
            if (c->pipelines[k]) c->vkDestroyPipeline(c->device, c->pipelines[k], NULL);
            if (c->pipeline_layouts[k]) c->vkDestroyPipelineLayout(c->device, c->pipeline_layouts[k], NULL);
            if (c->layouts[k]) c->vkDestroyDescriptorSetLayout(c->device, c->layouts[k], NULL);
        }
        for (uint32_t i = 0; i < c->pool_count; i++) c->vkDestroyDescriptorPool(c->device, c->pools[i].pool, NULL);
        for (uint32_t i = 0; i < c->chunk_count; i++) sk_vk_destroy_now(c, c->chunks[i].buffer);
        for (uint32_t i = 0; i < c->zombie_count; i++) sk_vk_destroy_now(c, c->zombies[i].buffer);
        free(c->zombies);
        free(c->trace);
        if (c->timeline) c->vkDestroySemaphore(c->device, c->timeline, NULL);
        if (c->copy_timeline) c->vkDestroySemaphore(c->device, c->copy_timeline, NULL);
        for (int i = 0; i < SK_STAGING_SLOTS; i++) sk_vk_destroy_now(c, c->staging[i].buffer);
        sk_vk_destroy_now(c, c->readback);
        if (c->pool) c->vkDestroyCommandPool(c->device, c->pool, NULL);
        if (c->transfer_pool) c->vkDestroyCommandPool(c->device, c->transfer_pool, NULL);
        c->vkDestroyDevice(c->device, NULL);
    }
    free(c);
}

int sk_vk_has_transfer_queue(const sk_vk_context *c) { return c->separate_transfer; }

int sk_vk_heap_usage(sk_vk_context *c, uint64_t *usage) {
    if (!c->memory_budget) return -1;
    VkPhysicalDeviceMemoryBudgetPropertiesEXT budget = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT };
    VkPhysicalDeviceMemoryProperties2 mem = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &budget };
    p_vkGetPhysicalDeviceMemoryProperties2(c->physical, &mem);
    *usage = 0;
    for (uint32_t i = 0; i < mem.memoryProperties.memoryHeapCount; i++)
        if (mem.memoryProperties.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) *usage += budget.heapUsage[i];
    return 0;
}
void sk_vk_force_unmapped(sk_vk_context *c, int on) { c->force_unmapped = on; }

#endif
