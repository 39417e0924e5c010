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
#include "spirv.inc"
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
uint64_t sk_vk_copy_async(sk_vk_context *c, sk_vk_buffer *d, uint64_t o, const void *s, uint64_t l, char *e, size_t n) { (void)c; (void)d; (void)o; (void)s; (void)l; sk_vk_available(e, n); return 0; }
int sk_vk_copy_wait(sk_vk_context *c, uint64_t v, char *e, size_t n) { (void)c; (void)v; return sk_vk_available(e, n); }
uint64_t sk_vk_staging_bytes(const sk_vk_context *c) { (void)c; return 0; }
uint64_t sk_vk_dispatch_count(const sk_vk_context *c, sk_vk_kernel k) { (void)c; (void)k; return 0; }
int sk_vk_upload(sk_vk_context *c, sk_vk_buffer *b, uint64_t o, const void *s, uint64_t l, char *e, size_t n) { (void)c; (void)b; (void)o; (void)s; (void)l; return sk_vk_available(e, n); }
int sk_vk_download(sk_vk_context *c, sk_vk_buffer *b, uint64_t o, void *d, uint64_t l, char *e, size_t n) { (void)c; (void)b; (void)o; (void)d; (void)l; return sk_vk_available(e, n); }
int sk_vk_dispatch(sk_vk_context *c, sk_vk_kernel k, const sk_vk_binding *b, uint32_t bc, const void *p, uint32_t pb, uint32_t x, uint32_t y, uint32_t z, char *e, size_t n) {
    (void)c; (void)k; (void)b; (void)bc; (void)p; (void)pb; (void)x; (void)y; (void)z; return sk_vk_available(e, n);
}

#else

// ---- loader and instance (one per process) ----

#define GLOBAL_FNS(X) X(vkCreateInstance) X(vkEnumerateInstanceVersion)
#define INSTANCE_FNS(X) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties) X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceMemoryProperties2) X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkEnumerateDeviceExtensionProperties) X(vkGetPhysicalDeviceFeatures2) X(vkCreateDevice) X(vkGetDeviceProcAddr)
#define DEVICE_FNS(X) X(vkGetDeviceQueue) X(vkCreateCommandPool) X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) \
    X(vkBeginCommandBuffer) X(vkEndCommandBuffer) X(vkResetCommandBuffer) X(vkQueueSubmit) X(vkCreateBuffer) X(vkDestroyBuffer) \
    X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory) \
    X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
    X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline) \
    X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) X(vkResetDescriptorPool) X(vkAllocateDescriptorSets) \
    X(vkUpdateDescriptorSets) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdDispatch) \
    X(vkCmdCopyBuffer) X(vkCmdPipelineBarrier) X(vkCreateSemaphore) X(vkDestroySemaphore) X(vkWaitSemaphores) \
    X(vkDeviceWaitIdle) X(vkDestroyDevice)

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

struct sk_vk_buffer { VkBuffer buffer; VkDeviceMemory memory; void *mapped; uint64_t size; uint64_t allocated; };

// The copy engine's staging ring: slots of host-visible memory, each reused once the copy that read
// it has completed (its value on the copy timeline).
#define SK_STAGING_SLOTS 4
#define SK_STAGING_SLOT_BYTES (4u << 20)
typedef struct staging_slot { sk_vk_buffer *buffer; VkCommandBuffer cmd; uint64_t value; } staging_slot;

struct sk_vk_context {
#define DEVICE_MEMBER(fn) PFN_##fn fn;
    DEVICE_FNS(DEVICE_MEMBER)
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue compute, transfer;
    uint32_t compute_family, transfer_family;
    int separate_transfer;
    VkCommandPool pool, transfer_pool;
    VkCommandBuffer cmd, transfer_cmd;
    VkSemaphore timeline;
    uint64_t timeline_value;
    // Copies signal their own timeline: they complete out of order with kernels on a second queue,
    // and a timeline's values must rise. Kernels wait on the device for the copies the host waited for.
    VkSemaphore copy_timeline;
    uint64_t copy_value, copy_visible;
    staging_slot staging[SK_STAGING_SLOTS];
    uint32_t next_slot;
    // Where results of unmapped buffers come back through: grown to the largest read, then reused.
    sk_vk_buffer *readback;
    uint64_t dispatches[SK_VK_KERNEL_COUNT];
    uint64_t min_alignment;
    int force_unmapped;
    VkPhysicalDeviceMemoryProperties memory;
    uint64_t max_range;
    VkDescriptorPool descriptors;
    VkDescriptorSetLayout layouts[SK_VK_KERNEL_COUNT];
    VkPipelineLayout pipeline_layouts[SK_VK_KERNEL_COUNT];
    VkPipeline pipelines[SK_VK_KERNEL_COUNT];
    pthread_mutex_t lock;
};

static const uint32_t kernel_buffers[SK_VK_KERNEL_COUNT] = { 3, 2, 4, 4, 4, 2, 4, 2, 5 };

static int check(VkResult r, const char *what, char *error, size_t len) {
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
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f12,
                               .queueCreateInfoCount = c->separate_transfer ? 2 : 1, .pQueueCreateInfos = queues };
    if (check(p_vkCreateDevice(c->physical, &dci, NULL, &c->device), "vkCreateDevice", error, len)) { free(c); return NULL; }
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
    VkDescriptorPoolSize size = { .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = 16 };
    VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 4, .poolSizeCount = 1, .pPoolSizes = &size };
    if (check(c->vkCreateCommandPool(c->device, &pci, NULL, &c->pool), "vkCreateCommandPool", error, len)
        || check(c->vkCreateCommandPool(c->device, &tpci, NULL, &c->transfer_pool), "vkCreateCommandPool", error, len)
        || check(c->vkCreateSemaphore(c->device, &sci, NULL, &c->timeline), "vkCreateSemaphore (timeline)", error, len)
        || check(c->vkCreateSemaphore(c->device, &sci, NULL, &c->copy_timeline), "vkCreateSemaphore (copy timeline)", error, len)
        || check(c->vkCreateDescriptorPool(c->device, &dpci, NULL, &c->descriptors), "vkCreateDescriptorPool", error, len)) {
        sk_vk_close(c);
        return NULL;
    }
    VkCommandBufferAllocateInfo cai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->pool,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
    VkCommandBufferAllocateInfo tcai = cai;
    tcai.commandPool = c->transfer_pool;
    if (check(c->vkAllocateCommandBuffers(c->device, &cai, &c->cmd), "vkAllocateCommandBuffers", error, len)
        || check(c->vkAllocateCommandBuffers(c->device, &tcai, &c->transfer_cmd), "vkAllocateCommandBuffers", error, len)) {
        sk_vk_close(c);
        return NULL;
    }
    for (int i = 0; i < SK_STAGING_SLOTS; i++) {
        if (check(c->vkAllocateCommandBuffers(c->device, &tcai, &c->staging[i].cmd), "vkAllocateCommandBuffers", error, len)) {
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
        if (c->descriptors) c->vkDestroyDescriptorPool(c->device, c->descriptors, NULL);
        if (c->timeline) c->vkDestroySemaphore(c->device, c->timeline, NULL);
        if (c->copy_timeline) c->vkDestroySemaphore(c->device, c->copy_timeline, NULL);
        for (int i = 0; i < SK_STAGING_SLOTS; i++) sk_vk_buffer_destroy(c, c->staging[i].buffer);
        sk_vk_buffer_destroy(c, c->readback);
        if (c->pool) c->vkDestroyCommandPool(c->device, c->pool, NULL);
        if (c->transfer_pool) c->vkDestroyCommandPool(c->device, c->transfer_pool, NULL);
        c->vkDestroyDevice(c->device, NULL);
    }
    free(c);
}

int sk_vk_has_transfer_queue(const sk_vk_context *c) { return c->separate_transfer; }
void sk_vk_force_unmapped(sk_vk_context *c, int on) { c->force_unmapped = on; }

static int memory_type(sk_vk_context *c, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < c->memory.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (c->memory.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

static sk_vk_buffer *make_buffer(sk_vk_context *c, uint64_t bytes, VkMemoryPropertyFlags want, VkMemoryPropertyFlags fallback, int map, char *error, size_t len) {
    sk_vk_buffer *b = calloc(1, sizeof *b);
    b->size = bytes;
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = bytes ? bytes : 4,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    // With a copy queue of another family, both families use the buffer: concurrent sharing instead
    // of ownership transfers.
    uint32_t families[2] = { c->compute_family, c->transfer_family };
    if (c->separate_transfer) { bci.sharingMode = VK_SHARING_MODE_CONCURRENT; bci.queueFamilyIndexCount = 2; bci.pQueueFamilyIndices = families; }
    if (check(c->vkCreateBuffer(c->device, &bci, NULL, &b->buffer), "vkCreateBuffer", error, len)) { free(b); return NULL; }
    VkMemoryRequirements req;
    c->vkGetBufferMemoryRequirements(c->device, b->buffer, &req);
    int type = memory_type(c, req.memoryTypeBits, want);
    if (type < 0) type = memory_type(c, req.memoryTypeBits, fallback);
    if (type < 0) { set_error(error, len, "no suitable Vulkan memory type"); c->vkDestroyBuffer(c->device, b->buffer, NULL); free(b); return NULL; }
    b->allocated = req.size;
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type };
    if (check(c->vkAllocateMemory(c->device, &mai, NULL, &b->memory), "vkAllocateMemory", error, len)) {
        c->vkDestroyBuffer(c->device, b->buffer, NULL); free(b); return NULL;
    }
    c->vkBindBufferMemory(c->device, b->buffer, b->memory, 0);
    if (map && (c->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
        if (check(c->vkMapMemory(c->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped), "vkMapMemory", error, len)) {
            sk_vk_buffer_destroy(c, b);
            return NULL;
        }
    }
    return b;
}

sk_vk_buffer *sk_vk_buffer_create(sk_vk_context *c, uint64_t bytes, char *error, size_t len) {
    // Whole 16-byte words: shaders read 16-bit data (bf16 weights) a uint at a time, and a read past
    // the end of a buffer returns zeros under robust access.
    bytes = (bytes + 15) & ~(uint64_t)15;
    // Device-local and mappable when the device has it (lavapipe, integrated GPUs, resizable BAR);
    // else device-local, reached through staging copies.
    return make_buffer(c, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                       VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, !c->force_unmapped, error, len);
}

void sk_vk_buffer_destroy(sk_vk_context *c, sk_vk_buffer *b) {
    if (!b) return;
    if (b->mapped) c->vkUnmapMemory(c->device, b->memory);
    c->vkDestroyBuffer(c->device, b->buffer, NULL);
    c->vkFreeMemory(c->device, b->memory, NULL);
    free(b);
}

uint64_t sk_vk_buffer_size(const sk_vk_buffer *b) { return b->size; }
uint64_t sk_vk_buffer_allocated(const sk_vk_buffer *b) { return b->allocated; }

uint64_t sk_vk_allocation_granularity(sk_vk_context *c) {
    // A probe buffer's memory requirements: their alignment is what sizes round up to (and buffers
    // are made in whole 16-byte words).
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 16,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    VkBuffer probe;
    if (c->vkCreateBuffer(c->device, &bci, NULL, &probe) != VK_SUCCESS) return 4096;
    VkMemoryRequirements req;
    c->vkGetBufferMemoryRequirements(c->device, probe, &req);
    c->vkDestroyBuffer(c->device, probe, NULL);
    return req.alignment > 16 ? req.alignment : 16;
}
void *sk_vk_buffer_mapped(const sk_vk_buffer *b) { return b->mapped; }
uint64_t sk_vk_staging_bytes(const sk_vk_context *c) {
    uint64_t n = 0;
    for (int i = 0; i < SK_STAGING_SLOTS; i++) if (c->staging[i].buffer) n += c->staging[i].buffer->allocated;
    return n + (c->readback ? c->readback->allocated : 0);
}
uint64_t sk_vk_dispatch_count(const sk_vk_context *c, sk_vk_kernel k) { return k < SK_VK_KERNEL_COUNT ? c->dispatches[k] : 0; }

static int wait_copy_timeline(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    if (value == 0) return 0;
    VkSemaphoreWaitInfo wi = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, .semaphoreCount = 1, .pSemaphores = &c->copy_timeline, .pValues = &value };
    return check(c->vkWaitSemaphores(c->device, &wi, UINT64_MAX), "vkWaitSemaphores (copy)", error, len);
}

uint64_t sk_vk_copy_async(sk_vk_context *c, sk_vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > dst->size) { set_error(error, len, "copy past the end of the buffer"); return 0; }
    pthread_mutex_lock(&c->lock);
    uint64_t last = c->copy_value;
    for (uint64_t done = 0; done < bytes;) {
        staging_slot *slot = &c->staging[c->next_slot];
        c->next_slot = (c->next_slot + 1) % SK_STAGING_SLOTS;
        // The slot's previous copy must have read it before the host writes it again.
        if (wait_copy_timeline(c, slot->value, error, len)) { last = 0; break; }
        if (!slot->buffer) {
            slot->buffer = make_buffer(c, SK_STAGING_SLOT_BYTES, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                       VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, 1, error, len);
            if (!slot->buffer) { last = 0; break; }
        }
        uint64_t n = bytes - done < SK_STAGING_SLOT_BYTES ? bytes - done : SK_STAGING_SLOT_BYTES;
        memcpy(slot->buffer->mapped, (const char *)src + done, n);
        VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
        c->vkResetCommandBuffer(slot->cmd, 0);
        c->vkBeginCommandBuffer(slot->cmd, &begin);
        VkBufferCopy region = { .srcOffset = 0, .dstOffset = offset + done, .size = n };
        c->vkCmdCopyBuffer(slot->cmd, slot->buffer->buffer, dst->buffer, 1, &region);
        c->vkEndCommandBuffer(slot->cmd);
        uint64_t value = ++c->copy_value;
        VkTimelineSemaphoreSubmitInfo tsi = { .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                              .signalSemaphoreValueCount = 1, .pSignalSemaphoreValues = &value };
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .pNext = &tsi, .commandBufferCount = 1, .pCommandBuffers = &slot->cmd,
                            .signalSemaphoreCount = 1, .pSignalSemaphores = &c->copy_timeline };
        if (check(c->vkQueueSubmit(c->transfer, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit (copy)", error, len)) {
            // Nothing signals this value now: step back so later waits stay satisfiable.
            c->copy_value--;
            last = 0;
            break;
        }
        slot->value = value;
        last = value;
        done += n;
    }
    pthread_mutex_unlock(&c->lock);
    return last;
}

int sk_vk_copy_wait(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    if (value > c->copy_value) { set_error(error, len, "waiting for a copy that was never submitted"); return -1; }
    if (wait_copy_timeline(c, value, error, len)) return -1;
    pthread_mutex_lock(&c->lock);
    if (value > c->copy_visible) c->copy_visible = value;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/// Submits `cmd` on `queue`, signalling the next timeline value, and waits for it.
static int submit_and_wait(sk_vk_context *c, VkQueue queue, VkCommandBuffer cmd, char *error, size_t len) {
    uint64_t value = ++c->timeline_value;
    // Kernels wait on the device for every copy the host has waited for (the memory dependency
    // between the copy queue's writes and the shaders' reads).
    uint64_t copy_wait = c->copy_visible;
    VkPipelineStageFlags stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
    VkTimelineSemaphoreSubmitInfo tsi = { .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                          .waitSemaphoreValueCount = copy_wait ? 1 : 0, .pWaitSemaphoreValues = &copy_wait,
                                          .signalSemaphoreValueCount = 1, .pSignalSemaphoreValues = &value };
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .pNext = &tsi, .commandBufferCount = 1, .pCommandBuffers = &cmd,
                        .waitSemaphoreCount = copy_wait ? 1 : 0, .pWaitSemaphores = &c->copy_timeline, .pWaitDstStageMask = &stage,
                        .signalSemaphoreCount = 1, .pSignalSemaphores = &c->timeline };
    if (check(c->vkQueueSubmit(queue, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit", error, len)) return -1;
    VkSemaphoreWaitInfo wi = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, .semaphoreCount = 1, .pSemaphores = &c->timeline, .pValues = &value };
    return check(c->vkWaitSemaphores(c->device, &wi, UINT64_MAX), "vkWaitSemaphores", error, len);
}

/// Reads `bytes` of `b` from `offset` through the host-visible readback buffer on the copy queue (a
/// transfer-only family when the device has one, else the compute queue: ordered submission, same
/// result). Called with the context's lock held.
static int staged_read(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t len) {
    if (!c->readback || c->readback->size < bytes) {
        sk_vk_buffer_destroy(c, c->readback);
        c->readback = make_buffer(c, bytes, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, 1, error, len);
        if (!c->readback) return -1;
    }
    VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    c->vkResetCommandBuffer(c->transfer_cmd, 0);
    c->vkBeginCommandBuffer(c->transfer_cmd, &begin);
    VkBufferCopy region = { .srcOffset = offset, .dstOffset = 0, .size = bytes };
    c->vkCmdCopyBuffer(c->transfer_cmd, b->buffer, c->readback->buffer, 1, &region);
    c->vkEndCommandBuffer(c->transfer_cmd);
    int rc = submit_and_wait(c, c->transfer, c->transfer_cmd, error, len);
    if (rc == 0) memcpy(dst, c->readback->mapped, bytes);
    return rc;
}

int sk_vk_upload(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { set_error(error, len, "upload past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    if (b->mapped) { memcpy((char *)b->mapped + offset, src, bytes); return 0; }
    // Through the staging ring on the copy queue, waited for (later kernels wait for it too).
    uint64_t value = sk_vk_copy_async(c, b, offset, src, bytes, error, len);
    return value ? sk_vk_copy_wait(c, value, error, len) : -1;
}

int sk_vk_download(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { set_error(error, len, "download past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    if (b->mapped) { memcpy(dst, (char *)b->mapped + offset, bytes); return 0; }
    pthread_mutex_lock(&c->lock);
    int rc = staged_read(c, b, offset, dst, bytes, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int ensure_pipeline(sk_vk_context *c, sk_vk_kernel k, char *error, size_t len) {
    if (c->pipelines[k]) return 0;
    static const uint32_t *code[SK_VK_KERNEL_COUNT] = { spirv_binary, spirv_unary, spirv_gemm, spirv_rows, spirv_rotary, spirv_upsample,
                                                         spirv_conv2d, spirv_copy, spirv_attention };
    static const size_t code_size[SK_VK_KERNEL_COUNT] = { sizeof spirv_binary, sizeof spirv_unary, sizeof spirv_gemm, sizeof spirv_rows,
                                                          sizeof spirv_rotary, sizeof spirv_upsample, sizeof spirv_conv2d, sizeof spirv_copy,
                                                          sizeof spirv_attention };
    VkDescriptorSetLayoutBinding bindings[8];
    for (uint32_t i = 0; i < kernel_buffers[k]; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){ .binding = i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                      .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo lci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                            .bindingCount = kernel_buffers[k], .pBindings = bindings };
    if (check(c->vkCreateDescriptorSetLayout(c->device, &lci, NULL, &c->layouts[k]), "vkCreateDescriptorSetLayout", error, len)) return -1;
    VkPushConstantRange range = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = 64 };
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                        .pSetLayouts = &c->layouts[k], .pushConstantRangeCount = 1, .pPushConstantRanges = &range };
    if (check(c->vkCreatePipelineLayout(c->device, &plci, NULL, &c->pipeline_layouts[k]), "vkCreatePipelineLayout", error, len)) return -1;
    VkShaderModuleCreateInfo smci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = code_size[k], .pCode = code[k] };
    VkShaderModule module;
    if (check(c->vkCreateShaderModule(c->device, &smci, NULL, &module), "vkCreateShaderModule", error, len)) return -1;
    VkComputePipelineCreateInfo cpci = { .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = module, .pName = "main" },
        .layout = c->pipeline_layouts[k] };
    int rc = check(c->vkCreateComputePipelines(c->device, VK_NULL_HANDLE, 1, &cpci, NULL, &c->pipelines[k]), "vkCreateComputePipelines", error, len);
    c->vkDestroyShaderModule(c->device, module, NULL);
    return rc;
}

int sk_vk_dispatch(sk_vk_context *c, sk_vk_kernel k, const sk_vk_binding *bindings, uint32_t count, const void *push, uint32_t push_bytes,
                   uint32_t gx, uint32_t gy, uint32_t gz, char *error, size_t len) {
    if (k >= SK_VK_KERNEL_COUNT || count != kernel_buffers[k] || push_bytes > 64) { set_error(error, len, "bad kernel arguments"); return -1; }
    uint64_t ranges[8];
    for (uint32_t i = 0; i < count; i++) {
        const sk_vk_binding *b = &bindings[i];
        char msg[240];
        if (b->offset >= b->buffer->size || b->offset % c->min_alignment != 0) {
            snprintf(msg, sizeof msg, "binding %u: offset %llu is outside the %llu-byte buffer or not a multiple of %llu", i,
                     (unsigned long long)b->offset, (unsigned long long)b->buffer->size, (unsigned long long)c->min_alignment);
            set_error(error, len, msg);
            return -1;
        }
        ranges[i] = b->range ? b->range : b->buffer->size - b->offset;
        if (ranges[i] > c->max_range || b->offset + ranges[i] > b->buffer->size) {
            snprintf(msg, sizeof msg, "binding %u: %llu bytes exceed the device's storage-buffer range of %llu bytes or the buffer", i,
                     (unsigned long long)ranges[i], (unsigned long long)c->max_range);
            set_error(error, len, msg);
            return -1;
        }
    }
    pthread_mutex_lock(&c->lock);
    int rc = ensure_pipeline(c, k, error, len);
    if (rc == 0) {
        c->vkResetDescriptorPool(c->device, c->descriptors, 0);
        VkDescriptorSet set;
        VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = c->descriptors,
                                             .descriptorSetCount = 1, .pSetLayouts = &c->layouts[k] };
        rc = check(c->vkAllocateDescriptorSets(c->device, &dsai, &set), "vkAllocateDescriptorSets", error, len);
        if (rc == 0) {
            VkDescriptorBufferInfo infos[8];
            VkWriteDescriptorSet writes[8];
            for (uint32_t i = 0; i < count; i++) {
                infos[i] = (VkDescriptorBufferInfo){ .buffer = bindings[i].buffer->buffer, .offset = bindings[i].offset, .range = ranges[i] };
                writes[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = i,
                                                    .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = &infos[i] };
            }
            c->vkUpdateDescriptorSets(c->device, count, writes, 0, NULL);
            VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
            c->vkResetCommandBuffer(c->cmd, 0);
            c->vkBeginCommandBuffer(c->cmd, &begin);
            c->vkCmdBindPipeline(c->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, c->pipelines[k]);
            c->vkCmdBindDescriptorSets(c->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, c->pipeline_layouts[k], 0, 1, &set, 0, NULL);
            uint8_t constants[64] = { 0 };
            memcpy(constants, push, push_bytes);
            c->vkCmdPushConstants(c->cmd, c->pipeline_layouts[k], VK_SHADER_STAGE_COMPUTE_BIT, 0, 64, constants);
            c->vkCmdDispatch(c->cmd, gx, gy, gz);
            c->vkEndCommandBuffer(c->cmd);
            rc = submit_and_wait(c, c->compute, c->cmd, error, len);
            if (rc == 0) c->dispatches[k]++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

#endif
