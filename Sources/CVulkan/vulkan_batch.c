// The batch: kernels, uploads and readbacks recorded into one command buffer, barriers only where a
// command touches what an earlier one wrote, submitted without the host waiting (CVulkan).
//
// Only batches signal the compute timeline, in order, so the batch being recorded will signal
// `timeline_value + 1`: everything it uses (command buffer, descriptor pool, staging chunk, the
// buffers it binds) is tagged with that value at once and reused when the timeline has passed it.
#include "sk_vulkan.h"
#if __has_include(<vulkan/vulkan.h>) && !defined(SK_FORCE_NO_VULKAN)
#include "vk_internal.h"

static uint64_t pending_value(const sk_vk_context *c) { return c->timeline_value + 1; }

uint64_t sk_vk_completed(sk_vk_context *c) {
    uint64_t v = 0;
    c->vkGetSemaphoreCounterValue(c->device, c->timeline, &v);
    return v;
}

void sk_vk_reap(sk_vk_context *c) {
    if (c->zombie_count == 0) return;
    uint64_t done = sk_vk_completed(c);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->zombie_count; i++) {
        if (c->zombies[i].value <= done) sk_vk_destroy_now(c, c->zombies[i].buffer);
        else c->zombies[kept++] = c->zombies[i];
    }
    c->zombie_count = kept;
}

int sk_vk_wait_compute(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    if (value == 0) return 0;
    if (value > c->timeline_value && sk_vk_flush(c, 0, error, len)) return -1;
    if (sk_vk_completed(c) < value) {
        c->counters.host_waits++;
        VkSemaphoreWaitInfo wi = { .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, .semaphoreCount = 1, .pSemaphores = &c->timeline, .pValues = &value };
        if (sk_vk_check(c->vkWaitSemaphores(c->device, &wi, UINT64_MAX), "vkWaitSemaphores", error, len)) return -1;
    }
    sk_vk_reap(c);
    return 0;
}

/// The tagged slot (of `count`, each with `value`) the device has finished with, or -1.
static int free_slot(sk_vk_context *c, const uint64_t *values, uint32_t count, size_t stride) {
    uint64_t done = sk_vk_completed(c);
    for (uint32_t i = 0; i < count; i++)
        if (*(const uint64_t *)((const char *)values + i * stride) <= done) return (int)i;
    return -1;
}

/// The oldest tagged value of `count`: what to wait for when every slot is in use.
static uint64_t oldest(const uint64_t *values, uint32_t count, size_t stride) {
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t v = *(const uint64_t *)((const char *)values + i * stride);
        if (v < m) m = v;
    }
    return m;
}

int sk_vk_begin(sk_vk_context *c, char *error, size_t len) {
    if (c->rec) return 0;
    int i = free_slot(c, &c->cmds[0].value, c->cmd_count, sizeof c->cmds[0]);
    if (i < 0 && c->cmd_count < SK_MAX_CMDS) {
        VkCommandBufferAllocateInfo cai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->pool,
                                            .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
        if (sk_vk_check(c->vkAllocateCommandBuffers(c->device, &cai, &c->cmds[c->cmd_count].cmd), "vkAllocateCommandBuffers", error, len)) return -1;
        c->cmds[c->cmd_count].value = 0;
        i = (int)c->cmd_count++;
    }
    if (i < 0) {
        // Every command buffer is in flight: wait for the oldest.
        if (sk_vk_wait_compute(c, oldest(&c->cmds[0].value, c->cmd_count, sizeof c->cmds[0]), error, len)) return -1;
        i = free_slot(c, &c->cmds[0].value, c->cmd_count, sizeof c->cmds[0]);
    }
    c->cmds[i].value = pending_value(c);
    c->rec = c->cmds[i].cmd;
    c->rec_dispatches = 0;
    c->tracked_count = 0;
    c->pool_current = -1;
    c->chunk_current = -1;
    VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    c->vkResetCommandBuffer(c->rec, 0);
    return sk_vk_check(c->vkBeginCommandBuffer(c->rec, &begin), "vkBeginCommandBuffer", error, len);
}

int sk_vk_flush(sk_vk_context *c, int wait, char *error, size_t len) {
    if (c->rec) {
        VkCommandBuffer cmd = c->rec;
        // What the batch wrote becomes visible to the host once its value is signalled (readbacks).
        VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                               .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
        c->vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
        c->rec = NULL;
        if (sk_vk_check(c->vkEndCommandBuffer(cmd), "vkEndCommandBuffer", error, len)) return -1;
        uint64_t value = pending_value(c);
        // The batch's kernels wait on the device for every copy they were told to (sk_vk_copy_wait).
        uint64_t copy_wait = c->copy_visible;
        VkPipelineStageFlags stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
        VkTimelineSemaphoreSubmitInfo tsi = { .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                              .waitSemaphoreValueCount = copy_wait ? 1 : 0, .pWaitSemaphoreValues = &copy_wait,
                                              .signalSemaphoreValueCount = 1, .pSignalSemaphoreValues = &value };
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .pNext = &tsi, .commandBufferCount = 1, .pCommandBuffers = &cmd,
                            .waitSemaphoreCount = copy_wait ? 1 : 0, .pWaitSemaphores = &c->copy_timeline, .pWaitDstStageMask = &stage,
                            .signalSemaphoreCount = 1, .pSignalSemaphores = &c->timeline };
        if (sk_vk_check(c->vkQueueSubmit(c->compute, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit", error, len)) return -1;
        c->timeline_value = value;
        c->counters.submits++;
    }
    return wait ? sk_vk_wait_compute(c, c->timeline_value, error, len) : 0;
}

static int overlaps(const sk_range *a, const sk_range *b) {
    return a->buffer == b->buffer && a->lo < b->hi && b->lo < a->hi;
}

void sk_vk_hazard(sk_vk_context *c, const sk_range *accesses, uint32_t count) {
    int hazard = c->tracked_count + count > SK_MAX_TRACKED;
    for (uint32_t i = 0; i < count && !hazard; i++)
        for (uint32_t j = 0; j < c->tracked_count && !hazard; j++)
            hazard = overlaps(&accesses[i], &c->tracked[j]) && (accesses[i].write || c->tracked[j].write);
    if (hazard) {
        // One global memory barrier: what compute shaders and copies wrote becomes visible to both.
        VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                               .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT };
        VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
        c->vkCmdPipelineBarrier(c->rec, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
        c->tracked_count = 0;
        c->counters.barriers++;
    }
    for (uint32_t i = 0; i < count && c->tracked_count < SK_MAX_TRACKED; i++) c->tracked[c->tracked_count++] = accesses[i];
}

int sk_vk_descriptor_set(sk_vk_context *c, VkDescriptorSetLayout layout, VkDescriptorSet *set, char *error, size_t len) {
    VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorSetCount = 1, .pSetLayouts = &layout };
    if (c->pool_current >= 0) {
        dsai.descriptorPool = c->pools[c->pool_current].pool;
        VkResult r = c->vkAllocateDescriptorSets(c->device, &dsai, set);
        if (r == VK_SUCCESS) return 0;
        if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) return sk_vk_check(r, "vkAllocateDescriptorSets", error, len);
    }
    // The current pool is full (or there is none): a pool the device has finished with, or a new one.
    int i = free_slot(c, &c->pools[0].value, c->pool_count, sizeof c->pools[0]);
    if (i < 0 && c->pool_count < SK_MAX_POOLS) {
        VkDescriptorPoolSize size = { .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = SK_SETS_PER_POOL * 8 };
        VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = SK_SETS_PER_POOL,
                                            .poolSizeCount = 1, .pPoolSizes = &size };
        if (sk_vk_check(c->vkCreateDescriptorPool(c->device, &dpci, NULL, &c->pools[c->pool_count].pool), "vkCreateDescriptorPool", error, len)) return -1;
        c->pools[c->pool_count].value = 0;
        i = (int)c->pool_count++;
    }
    if (i < 0) {
        if (sk_vk_wait_compute(c, oldest(&c->pools[0].value, c->pool_count, sizeof c->pools[0]), error, len)) return -1;
        i = free_slot(c, &c->pools[0].value, c->pool_count, sizeof c->pools[0]);
    }
    c->vkResetDescriptorPool(c->device, c->pools[i].pool, 0);
    c->pools[i].value = pending_value(c);
    c->pool_current = i;
    dsai.descriptorPool = c->pools[i].pool;
    return sk_vk_check(c->vkAllocateDescriptorSets(c->device, &dsai, set), "vkAllocateDescriptorSets", error, len);
}

int sk_vk_stage(sk_vk_context *c, uint64_t bytes, sk_vk_buffer **buffer, uint64_t *offset, char *error, size_t len) {
    uint64_t need = (bytes + 15) & ~(uint64_t)15;
    if (c->chunk_current >= 0) {
        sk_chunk *k = &c->chunks[c->chunk_current];
        if (k->used + need <= k->buffer->size) {
            *buffer = k->buffer;
            *offset = k->used;
            k->used += need;
            return 0;
        }
    }
    // A chunk the device has finished reading that is large enough, else a new one.
    uint64_t done = sk_vk_completed(c);
    int i = -1;
    for (uint32_t j = 0; j < c->chunk_count && i < 0; j++)
        if (c->chunks[j].value <= done && c->chunks[j].buffer->size >= need) i = (int)j;
    if (i < 0) {
        // A free chunk too small for this upload is replaced by one that fits.
        for (uint32_t j = 0; j < c->chunk_count && i < 0; j++)
            if (c->chunks[j].value <= done) { sk_vk_destroy_now(c, c->chunks[j].buffer); c->chunks[j].buffer = NULL; i = (int)j; }
        if (i < 0 && c->chunk_count < SK_MAX_CHUNKS) i = (int)c->chunk_count++;
        if (i < 0) {
            // Every chunk is in flight: the host waits for the device to finish them.
            if (sk_vk_flush(c, 1, error, len)) return -1;
            return sk_vk_stage(c, bytes, buffer, offset, error, len);
        }
        if (!c->chunks[i].buffer) {
            uint64_t size = need > SK_CHUNK_BYTES ? need : SK_CHUNK_BYTES;
            c->chunks[i].buffer = sk_vk_make_buffer(c, size, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                                    VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 1, error, len);
            if (!c->chunks[i].buffer) return -1;
        }
    }
    c->chunks[i].used = need;
    c->chunks[i].value = pending_value(c);
    c->chunk_current = i;
    *buffer = c->chunks[i].buffer;
    *offset = 0;
    return 0;
}

void sk_vk_trace_add(sk_vk_context *c, sk_vk_trace_entry e) {
    if (!c->trace_cap) return;
    if (c->trace_count == c->trace_cap) {
        uint32_t cap = c->trace_cap * 2;
        sk_vk_trace_entry *t = realloc(c->trace, cap * sizeof *t);
        if (!t) return;
        c->trace = t;
        c->trace_cap = cap;
    }
    c->trace[c->trace_count++] = e;
}

void sk_vk_trace(sk_vk_context *c, int on) {
    pthread_mutex_lock(&c->lock);
    free(c->trace);
    c->trace = on ? malloc(1024 * sizeof *c->trace) : NULL;
    c->trace_cap = c->trace ? 1024 : 0;
    c->trace_count = 0;
    pthread_mutex_unlock(&c->lock);
}

uint32_t sk_vk_trace_read(sk_vk_context *c, sk_vk_trace_entry *out, uint32_t capacity) {
    pthread_mutex_lock(&c->lock);
    uint32_t n = c->trace_count;
    if (out) memcpy(out, c->trace, (n < capacity ? n : capacity) * sizeof *out);
    pthread_mutex_unlock(&c->lock);
    return n;
}

void sk_vk_skip_copy_waits(sk_vk_context *c, int on) { c->skip_copy_waits = on; }

uint64_t sk_vk_compute_mark(sk_vk_context *c) {
    pthread_mutex_lock(&c->lock);
    uint64_t v = c->rec ? pending_value(c) : c->timeline_value;
    pthread_mutex_unlock(&c->lock);
    return v;
}

int sk_vk_wait(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    pthread_mutex_lock(&c->lock);
    int rc = sk_vk_wait_compute(c, value, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sk_vk_finish(sk_vk_context *c, char *error, size_t len) {
    pthread_mutex_lock(&c->lock);
    int rc = sk_vk_flush(c, 1, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

#endif
