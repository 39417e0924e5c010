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


struct sk_vk_buffer { VkBuffer buffer; VkDeviceMemory memory; void *mapped; uint64_t size; uint64_t allocated; int coherent; };

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
    sk_vk_counters counters;
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

extern const uint32_t kernel_buffers[SK_VK_KERNEL_COUNT];

/// 0 on VK_SUCCESS; else -1 with `what` and the result (out of memory named) in `error`.
int sk_vk_check(VkResult r, const char *what, char *error, size_t len);
sk_vk_buffer *sk_vk_make_buffer(sk_vk_context *c, uint64_t bytes, VkMemoryPropertyFlags want, VkMemoryPropertyFlags fallback, int map, char *error, size_t len);
int sk_vk_submit_and_wait(sk_vk_context *c, VkQueue queue, VkCommandBuffer cmd, char *error, size_t len);
/// `sk_vk_copy_async`, its bytes counted as weights or as other data.
uint64_t sk_vk_copy_counted(sk_vk_context *c, sk_vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes, int weights, char *error, size_t len);

#endif
