// Buffers, the staging ring and copies on the copy queue, uploads and downloads (CVulkan).
#include "sk_vulkan.h"
#if __has_include(<vulkan/vulkan.h>) && !defined(SK_FORCE_NO_VULKAN)
#include "vk_internal.h"

/// Submits `cmd` on `queue`, signalling the next timeline value, and waits for it.
int sk_vk_submit_and_wait(sk_vk_context *c, VkQueue queue, VkCommandBuffer cmd, char *error, size_t len) {
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
    if (sk_vk_check(c->vkQueueSubmit(queue, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit", error, len)) return -1;
    c->counters.submits++;
    c->counters.host_waits++;
    VkSemaphoreWaitInfo wi = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, .semaphoreCount = 1, .pSemaphores = &c->timeline, .pValues = &value };
    return sk_vk_check(c->vkWaitSemaphores(c->device, &wi, UINT64_MAX), "vkWaitSemaphores", error, len);
}

static int memory_type(sk_vk_context *c, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < c->memory.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (c->memory.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

sk_vk_buffer *sk_vk_make_buffer(sk_vk_context *c, uint64_t bytes, VkMemoryPropertyFlags want, VkMemoryPropertyFlags fallback, int map, char *error, size_t len) {
    sk_vk_buffer *b = calloc(1, sizeof *b);
    b->size = bytes;
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = bytes ? bytes : 4,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    // With a copy queue of another family, both families use the buffer: concurrent sharing instead
    // of ownership transfers.
    uint32_t families[2] = { c->compute_family, c->transfer_family };
    if (c->separate_transfer) { bci.sharingMode = VK_SHARING_MODE_CONCURRENT; bci.queueFamilyIndexCount = 2; bci.pQueueFamilyIndices = families; }
    if (sk_vk_check(c->vkCreateBuffer(c->device, &bci, NULL, &b->buffer), "vkCreateBuffer", error, len)) { free(b); return NULL; }
    VkMemoryRequirements req;
    c->vkGetBufferMemoryRequirements(c->device, b->buffer, &req);
    int type = memory_type(c, req.memoryTypeBits, want);
    if (type < 0) type = memory_type(c, req.memoryTypeBits, fallback);
    if (type < 0) { sk_vk_set_error(error, len, "no suitable Vulkan memory type"); c->vkDestroyBuffer(c->device, b->buffer, NULL); free(b); return NULL; }
    b->allocated = req.size;
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type };
    if (sk_vk_check(c->vkAllocateMemory(c->device, &mai, NULL, &b->memory), "vkAllocateMemory", error, len)) {
        c->vkDestroyBuffer(c->device, b->buffer, NULL); free(b); return NULL;
    }
    c->vkBindBufferMemory(c->device, b->buffer, b->memory, 0);
    b->coherent = (c->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    if (map && (c->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
        if (sk_vk_check(c->vkMapMemory(c->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped), "vkMapMemory", error, len)) {
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
    // Unified memory (lavapipe, integrated GPUs): device-local and mapped, written and read in place.
    // The discrete path: device-local memory the CPU never maps, reached through staging copies.
    if (c->force_unmapped) return sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0, error, len);
    return sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                       VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 1, error, len);
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
    uint64_t reached = 0;
    c->vkGetSemaphoreCounterValue(c->device, c->copy_timeline, &reached);
    if (reached >= value) return 0;
    c->counters.host_waits++;
    VkSemaphoreWaitInfo wi = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, .semaphoreCount = 1, .pSemaphores = &c->copy_timeline, .pValues = &value };
    return sk_vk_check(c->vkWaitSemaphores(c->device, &wi, UINT64_MAX), "vkWaitSemaphores (copy)", error, len);
}

uint64_t sk_vk_copy_async(sk_vk_context *c, sk_vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t len) {
    return sk_vk_copy_counted(c, dst, offset, src, bytes, 1, error, len);
}

uint64_t sk_vk_copy_counted(sk_vk_context *c, sk_vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes, int weights, char *error, size_t len) {
    if (offset + bytes > dst->size) { sk_vk_set_error(error, len, "copy past the end of the buffer"); return 0; }
    pthread_mutex_lock(&c->lock);
    uint64_t last = c->copy_value;
    for (uint64_t done = 0; done < bytes;) {
        staging_slot *slot = &c->staging[c->next_slot];
        c->next_slot = (c->next_slot + 1) % SK_STAGING_SLOTS;
        // The slot's previous copy must have read it before the host writes it again.
        if (wait_copy_timeline(c, slot->value, error, len)) { last = 0; break; }
        if (!slot->buffer) {
            slot->buffer = sk_vk_make_buffer(c, SK_STAGING_SLOT_BYTES, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
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
        if (sk_vk_check(c->vkQueueSubmit(c->transfer, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit (copy)", error, len)) {
            // Nothing signals this value now: step back so later waits stay satisfiable.
            c->copy_value--;
            last = 0;
            break;
        }
        slot->value = value;
        last = value;
        done += n;
        c->counters.submits++;
        if (weights) c->counters.weight_bytes_in += n; else c->counters.other_bytes_in += n;
    }
    pthread_mutex_unlock(&c->lock);
    return last;
}

int sk_vk_copy_wait(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    if (value > c->copy_value) { sk_vk_set_error(error, len, "waiting for a copy that was never submitted"); return -1; }
    if (wait_copy_timeline(c, value, error, len)) return -1;
    pthread_mutex_lock(&c->lock);
    if (value > c->copy_visible) c->copy_visible = value;
    pthread_mutex_unlock(&c->lock);
    return 0;
}


/// Reads `bytes` of `b` from `offset` through the host-visible readback buffer on the copy queue (a
/// transfer-only family when the device has one, else the compute queue: ordered submission, same
/// result). Called with the context's lock held.
static int staged_read(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t len) {
    if (!c->readback || c->readback->size < bytes) {
        sk_vk_buffer_destroy(c, c->readback);
        // Cached host memory: the CPU reads it at memory speed (uncached reads are slow everywhere).
        c->readback = sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                                  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, 1, error, len);
        if (!c->readback) return -1;
    }
    VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    c->vkResetCommandBuffer(c->transfer_cmd, 0);
    c->vkBeginCommandBuffer(c->transfer_cmd, &begin);
    VkBufferCopy region = { .srcOffset = offset, .dstOffset = 0, .size = bytes };
    c->vkCmdCopyBuffer(c->transfer_cmd, b->buffer, c->readback->buffer, 1, &region);
    c->vkEndCommandBuffer(c->transfer_cmd);
    int rc = sk_vk_submit_and_wait(c, c->transfer, c->transfer_cmd, error, len);
    if (rc == 0 && !c->readback->coherent) {
        // Cached but not coherent: the device's writes become visible to the host after an invalidate.
        VkMappedMemoryRange range = { .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE, .memory = c->readback->memory, .offset = 0, .size = VK_WHOLE_SIZE };
        rc = sk_vk_check(c->vkInvalidateMappedMemoryRanges(c->device, 1, &range), "vkInvalidateMappedMemoryRanges", error, len);
    }
    if (rc == 0) memcpy(dst, c->readback->mapped, bytes);
    return rc;
}

int sk_vk_upload(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { sk_vk_set_error(error, len, "upload past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    if (b->mapped) { memcpy((char *)b->mapped + offset, src, bytes); c->counters.other_bytes_in += bytes; return 0; }
    // Through the staging ring on the copy queue, waited for (later kernels wait for it too).
    uint64_t value = sk_vk_copy_counted(c, b, offset, src, bytes, 0, error, len);
    return value ? sk_vk_copy_wait(c, value, error, len) : -1;
}

int sk_vk_download(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { sk_vk_set_error(error, len, "download past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    c->counters.bytes_out += bytes;
    if (b->mapped) { memcpy(dst, (char *)b->mapped + offset, bytes); return 0; }
    pthread_mutex_lock(&c->lock);
    int rc = staged_read(c, b, offset, dst, bytes, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void sk_vk_get_counters(const sk_vk_context *c, sk_vk_counters *out) { *out = c->counters; }

#endif
