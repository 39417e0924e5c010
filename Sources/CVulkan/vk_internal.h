// Private to CVulkan: what its C files share (the loaded entry points, the context and buffer
// structs, small helpers). Included only where the Vulkan headers are present.
#ifndef SK_VK_INTERNAL_H
#define SK_VK_INTERNAL_H

#include "sk_vulkan.h"
#include <stdio.h>
#include <string.h>
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include <stdlib.h>
#include <pthread.h>

#define GLOBAL_FNS(X) X(vkCreateInstance) X(vkEnumerateInstanceVersion)
#define INSTANCE_FNS(X) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties) X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceMemoryProperties2) X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkEnumerateDeviceExtensionProperties) X(vkGetPhysicalDeviceFeatures2) X(vkCreateDevice) X(vkGetDeviceProcAddr)
#define DEVICE_FNS(X) X(vkGetDeviceQueue) X(vkCreateCommandPool) X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) \
    X(vkBeginCommandBuffer) X(vkEndCommandBuffer) X(vkResetCommandBuffer) X(vkQueueSubmit) X(vkCreateBuffer) X(vkDestroyBuffer) \
    X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory) X(vkInvalidateMappedMemoryRanges) \
    X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
    X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline) \
    X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) X(vkResetDescriptorPool) X(vkAllocateDescriptorSets) \
    X(vkUpdateDescriptorSets) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdDispatch) \
    X(vkCmdCopyBuffer) X(vkCmdPipelineBarrier) X(vkCreateSemaphore) X(vkDestroySemaphore) X(vkWaitSemaphores) X(vkGetSemaphoreCounterValue) \
    X(vkDeviceWaitIdle) X(vkDestroyDevice)


static inline void sk_vk_set_error(char *error, size_t len, const char *msg) {
    if (error && len) { snprintf(error, len, "%s", msg); }
}


// `last_use`: the compute timeline value of the last submission that binds or writes the buffer (it
// may be the batch being recorded); `last_copy`: the copy timeline value of the last copy into it.
// `counted`: a device buffer (in `live_bytes`), not staging.
struct sk_vk_buffer { VkBuffer buffer; VkDeviceMemory memory; void *mapped; uint64_t size; uint64_t allocated; int coherent;
                      uint64_t last_use, last_copy; int counted; };

// The copy engine's staging ring: slots of host-visible memory, each reused once the copy that read
// it has completed (its value on the copy timeline).
// Slots are sized to their chunk, up to SK_STAGING_SLOT_BYTES (large chunks: few submissions), and
// made while all of them together stay within SK_STAGING_CAP; past that the host waits for the oldest.
#define SK_STAGING_SLOTS 32
#define SK_STAGING_SLOT_BYTES (64ull << 20)
#define SK_STAGING_CAP (512ull << 20)
typedef struct staging_slot { sk_vk_buffer *buffer; VkCommandBuffer cmd; uint64_t value; } staging_slot;

// The batch: kernels, uploads and readbacks are recorded into one command buffer and submitted
// together (every SK_SUBMIT_EVERY dispatches, when a copy or the host needs it). Every resource a
// batch uses is tagged with the compute timeline value that batch signals; it is reused once the
// timeline has passed it.
#define SK_MAX_CMDS 64
#define SK_MAX_POOLS 64
#define SK_SETS_PER_POOL 256
#define SK_MAX_CHUNKS 64
#define SK_CHUNK_BYTES (8ull << 20)
#define SK_MAX_TRACKED 128
#define SK_SUBMIT_EVERY 256
typedef struct sk_tagged_cmd { VkCommandBuffer cmd; uint64_t value; } sk_tagged_cmd;
typedef struct sk_tagged_pool { VkDescriptorPool pool; uint64_t value; } sk_tagged_pool;
// Host-visible memory that uploads recorded into a batch are staged in.
typedef struct sk_chunk { sk_vk_buffer *buffer; uint64_t used, value; } sk_chunk;
// A byte range a recorded command reads or writes since the last barrier.
typedef struct sk_range { VkBuffer buffer; uint64_t lo, hi; int write; } sk_range;
// A buffer given back while the device may still use it: destroyed once the timeline passes `value`.
typedef struct sk_zombie { sk_vk_buffer *buffer; uint64_t value; } sk_zombie;

struct sk_vk_context {
#define DEVICE_MEMBER(fn) PFN_##fn fn;
    DEVICE_FNS(DEVICE_MEMBER)
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue compute, transfer;
    uint32_t compute_family, transfer_family;
    int separate_transfer;
    VkCommandPool pool, transfer_pool;
    sk_tagged_cmd cmds[SK_MAX_CMDS];
    uint32_t cmd_count;
    VkCommandBuffer rec;          // the batch being recorded (NULL: none)
    uint32_t rec_dispatches;
    sk_tagged_pool pools[SK_MAX_POOLS];
    uint32_t pool_count;
    int pool_current;
    sk_chunk chunks[SK_MAX_CHUNKS];
    uint32_t chunk_count;
    int chunk_current;
    sk_range tracked[SK_MAX_TRACKED];
    uint32_t tracked_count;
    sk_zombie *zombies;
    uint32_t zombie_count, zombie_cap;
    uint64_t live_bytes, peak_bytes;
    int memory_budget;            // VK_EXT_memory_budget enabled: heap usage can be read
    // Test hook: copies ignore the compute value they must wait for (shows the ring hazard test can fail).
    int skip_copy_waits;
    sk_vk_trace_entry *trace;
    uint32_t trace_count, trace_cap;
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
    sk_vk_counters counters;
    uint64_t min_alignment;
    int force_unmapped;
    VkPhysicalDeviceMemoryProperties memory;
    uint64_t max_range;
    VkDescriptorSetLayout layouts[SK_VK_KERNEL_COUNT];
    VkPipelineLayout pipeline_layouts[SK_VK_KERNEL_COUNT];
    VkPipeline pipelines[SK_VK_KERNEL_COUNT];
    pthread_mutex_t lock;
};

extern const uint32_t kernel_buffers[SK_VK_KERNEL_COUNT];

/// 0 on VK_SUCCESS; else -1 with `what` and the result (out of memory named) in `error`.
int sk_vk_check(VkResult r, const char *what, char *error, size_t len);
sk_vk_buffer *sk_vk_make_buffer(sk_vk_context *c, uint64_t bytes, VkMemoryPropertyFlags want, VkMemoryPropertyFlags fallback, int map, char *error, size_t len);

// The batch (vulkan_batch.c); all called with the context's lock held.
/// The compute timeline's value now (what the device has finished).
uint64_t sk_vk_completed(sk_vk_context *c);
/// Starts recording a batch unless one is open.
int sk_vk_begin(sk_vk_context *c, char *error, size_t len);
/// Submits the batch being recorded (if any); with `wait`, the host then waits until the device has
/// finished everything submitted.
int sk_vk_flush(sk_vk_context *c, int wait, char *error, size_t len);
/// The host waits until the compute timeline reaches `value` (submitting the batch first if `value` is its own).
int sk_vk_wait_compute(sk_vk_context *c, uint64_t value, char *error, size_t len);
/// Records the accesses of the next command: a barrier first when one of them touches bytes an earlier
/// command of the batch wrote, or writes bytes it read.
void sk_vk_hazard(sk_vk_context *c, const sk_range *accesses, uint32_t count);
/// A descriptor set of `layout` for the batch.
int sk_vk_descriptor_set(sk_vk_context *c, VkDescriptorSetLayout layout, VkDescriptorSet *set, char *error, size_t len);
/// Host-visible memory for `bytes` of an upload recorded into the batch.
int sk_vk_stage(sk_vk_context *c, uint64_t bytes, sk_vk_buffer **buffer, uint64_t *offset, char *error, size_t len);
/// Destroys now (no wait): only when the device no longer uses it.
void sk_vk_destroy_now(sk_vk_context *c, sk_vk_buffer *b);
/// Frees the given-back buffers the device has passed.
void sk_vk_reap(sk_vk_context *c);
void sk_vk_trace_add(sk_vk_context *c, sk_vk_trace_entry e);
/// The device-local heaps' usage by this process (VK_EXT_memory_budget); -1 without the extension.
int sk_vk_heap_usage(sk_vk_context *c, uint64_t *usage);

#endif
