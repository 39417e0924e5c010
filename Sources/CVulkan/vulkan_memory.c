// Buffers, the staging ring and copies on the copy queue, uploads and downloads (CVulkan).
#include "sk_vulkan.h"
#if __has_include(<vulkan/vulkan.h>) && !defined(SK_FORCE_NO_VULKAN)
#include "vk_internal.h"

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
    sk_vk_buffer *b = c->force_unmapped
        ? sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0, error, len)
        : sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                            VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 1, error, len);
    if (b) {
        pthread_mutex_lock(&c->lock);
        b->counted = 1;
        sk_vk_trace_add(c, (sk_vk_trace_entry){ .kind = 3, .buffer = b, .lo = 0, .hi = b->size });
        c->live_bytes += b->allocated;
        if (c->live_bytes > c->peak_bytes) c->peak_bytes = c->live_bytes;
        pthread_mutex_unlock(&c->lock);
    }
    return b;
}

void sk_vk_destroy_now(sk_vk_context *c, sk_vk_buffer *b) {
    if (!b) return;
    if (b->counted) c->live_bytes -= b->allocated;
    if (b->mapped) c->vkUnmapMemory(c->device, b->memory);
    c->vkDestroyBuffer(c->device, b->buffer, NULL);
    c->vkFreeMemory(c->device, b->memory, NULL);
    free(b);
}

static int wait_copy_timeline(sk_vk_context *c, uint64_t value, char *error, size_t len);

void sk_vk_buffer_destroy(sk_vk_context *c, sk_vk_buffer *b) {
    if (!b) return;
    pthread_mutex_lock(&c->lock);
    // The device may still read or write it: the memory is free only once it has finished.
    char ignored[16];
    sk_vk_wait_compute(c, b->last_use, ignored, sizeof ignored);
    wait_copy_timeline(c, b->last_copy, ignored, sizeof ignored);
    sk_vk_destroy_now(c, b);
    pthread_mutex_unlock(&c->lock);
}

void sk_vk_buffer_retire(sk_vk_context *c, sk_vk_buffer *b) {
    if (!b) return;
    pthread_mutex_lock(&c->lock);
    if (b->last_use <= sk_vk_completed(c)) sk_vk_destroy_now(c, b);
    else {
        if (c->zombie_count == c->zombie_cap) {
            uint32_t cap = c->zombie_cap ? c->zombie_cap * 2 : 64;
            sk_zombie *z = realloc(c->zombies, cap * sizeof *z);
            if (!z) { char ignored[16]; sk_vk_wait_compute(c, b->last_use, ignored, sizeof ignored); sk_vk_destroy_now(c, b); pthread_mutex_unlock(&c->lock); return; }
            c->zombies = z;
            c->zombie_cap = cap;
        }
        c->zombies[c->zombie_count++] = (sk_zombie){ .buffer = b, .value = b->last_use };
    }
    pthread_mutex_unlock(&c->lock);
}

void sk_vk_get_memory_stats(sk_vk_context *c, sk_vk_memory_stats *out) {
    pthread_mutex_lock(&c->lock);
    sk_vk_reap(c);
    out->live = c->live_bytes;
    out->peak = c->peak_bytes;
    pthread_mutex_unlock(&c->lock);
    out->has_heap_usage = sk_vk_heap_usage(c, &out->heap_usage) == 0;
}

void sk_vk_reset_peak(sk_vk_context *c) {
    pthread_mutex_lock(&c->lock);
    sk_vk_reap(c);
    c->peak_bytes = c->live_bytes;
    pthread_mutex_unlock(&c->lock);
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

/// A staging slot of at least `want` bytes whose previous copy has finished: a free one, else a new one
/// within SK_STAGING_CAP, else the oldest once the host has waited for it.
static staging_slot *take_slot(sk_vk_context *c, uint64_t want, char *error, size_t len) {
    uint64_t reached = 0, held = 0;
    c->vkGetSemaphoreCounterValue(c->device, c->copy_timeline, &reached);
    for (int j = 0; j < SK_STAGING_SLOTS; j++) held += c->staging[j].buffer ? c->staging[j].buffer->size : 0;
    staging_slot *pick = NULL, *oldest = NULL;
    for (int k = 0; k < SK_STAGING_SLOTS && !pick; k++) {
        staging_slot *s = &c->staging[(c->next_slot + k) % SK_STAGING_SLOTS];
        if (s->buffer && s->value <= reached && s->buffer->size >= want) pick = s;
    }
    for (int k = 0; k < SK_STAGING_SLOTS && !pick; k++) {
        staging_slot *s = &c->staging[(c->next_slot + k) % SK_STAGING_SLOTS];
        uint64_t size = s->buffer ? s->buffer->size : 0;
        if ((!s->buffer || s->value <= reached) && held - size + want <= SK_STAGING_CAP) pick = s;
    }
    if (!pick) {
        for (int j = 0; j < SK_STAGING_SLOTS; j++)
            if (c->staging[j].buffer && (!oldest || c->staging[j].value < oldest->value)) oldest = &c->staging[j];
        if (!oldest) oldest = &c->staging[c->next_slot];
        // Every slot is in flight and the cap is reached: the host waits for the oldest copy.
        if (wait_copy_timeline(c, oldest->value, error, len)) return NULL;
        pick = oldest;
    }
    c->next_slot = (int)(pick - c->staging + 1) % SK_STAGING_SLOTS;
    if (pick->buffer && pick->buffer->size < want) { sk_vk_destroy_now(c, pick->buffer); pick->buffer = NULL; }
    if (!pick->buffer) {
        pick->buffer = sk_vk_make_buffer(c, want, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, 1, error, len);
        if (!pick->buffer) return NULL;
    }
    return pick;
}

uint64_t sk_vk_copy_pieces(sk_vk_context *c, sk_vk_buffer *dst, const sk_vk_piece *pieces, uint32_t count, uint64_t after, char *error, size_t len) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (pieces[i].offset + pieces[i].bytes > dst->size) { sk_vk_set_error(error, len, "copy past the end of the buffer"); return 0; }
        total += pieces[i].bytes;
    }
    // A slot holds whole pieces and the parts of at most two split ones: count + 1 regions.
    VkBufferCopy *regions = malloc((count + 1) * sizeof *regions);
    if (!regions) { sk_vk_set_error(error, len, "out of host memory"); return 0; }
    pthread_mutex_lock(&c->lock);
    uint64_t last = c->copy_value;
    if (c->skip_copy_waits) after = 0;
    // The kernels it waits for must be submitted before the copy waits for them (else it never starts).
    if (after > c->timeline_value && sk_vk_flush(c, 0, error, len)) { pthread_mutex_unlock(&c->lock); free(regions); return 0; }
    for (uint32_t i = 0; i < count; i++)
        sk_vk_trace_add(c, (sk_vk_trace_entry){ .kind = 2, .buffer = dst, .lo = pieces[i].offset, .hi = pieces[i].offset + pieces[i].bytes, .value = after });
    uint32_t i = 0;
    uint64_t into = 0, moved = 0;  // bytes of piece i already copied; of all pieces
    while (i < count && pieces[i].bytes == 0) i++;
    while (i < count) {
        // Sized to what is left (whole MiB), up to SK_STAGING_SLOT_BYTES: large copies go in few submissions.
        uint64_t want = total - moved + 16 * (uint64_t)(count - i);
        want = want < SK_STAGING_SLOT_BYTES ? (want + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1) : SK_STAGING_SLOT_BYTES;
        staging_slot *slot = take_slot(c, want, error, len);
        if (!slot) { last = 0; break; }
        uint64_t cap = slot->buffer->size, used = 0, sent = 0;
        uint32_t n_regions = 0;
        while (i < count && used < cap) {
            uint64_t n = pieces[i].bytes - into < cap - used ? pieces[i].bytes - into : cap - used;
            memcpy((char *)slot->buffer->mapped + used, (const char *)pieces[i].src + into, n);
            regions[n_regions++] = (VkBufferCopy){ .srcOffset = used, .dstOffset = pieces[i].offset + into, .size = n };
            used = (used + n + 15) & ~(uint64_t)15;
            sent += n;
            into += n;
            if (into == pieces[i].bytes) { into = 0; do i++; while (i < count && pieces[i].bytes == 0); }
        }
        VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
        c->vkResetCommandBuffer(slot->cmd, 0);
        c->vkBeginCommandBuffer(slot->cmd, &begin);
        c->vkCmdCopyBuffer(slot->cmd, slot->buffer->buffer, dst->buffer, n_regions, regions);
        c->vkEndCommandBuffer(slot->cmd);
        uint64_t value = ++c->copy_value;
        // On the device, after the kernels that read what it overwrites (the compute timeline at `after`).
        VkPipelineStageFlags stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
        VkTimelineSemaphoreSubmitInfo tsi = { .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                              .waitSemaphoreValueCount = after ? 1 : 0, .pWaitSemaphoreValues = &after,
                                              .signalSemaphoreValueCount = 1, .pSignalSemaphoreValues = &value };
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .pNext = &tsi, .commandBufferCount = 1, .pCommandBuffers = &slot->cmd,
                            .waitSemaphoreCount = after ? 1 : 0, .pWaitSemaphores = &c->timeline, .pWaitDstStageMask = &stage,
                            .signalSemaphoreCount = 1, .pSignalSemaphores = &c->copy_timeline };
        if (sk_vk_check(c->vkQueueSubmit(c->transfer, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit (copy)", error, len)) {
            // Nothing signals this value now: step back so later waits stay satisfiable.
            c->copy_value--;
            last = 0;
            break;
        }
        slot->value = value;
        dst->last_copy = value;
        last = value;
        moved += sent;
        c->counters.submits++;
        c->counters.weight_bytes_in += sent;
    }
    pthread_mutex_unlock(&c->lock);
    free(regions);
    return last;
}

/// Commands recorded from now on wait on the device for copy `value`: what is recorded so far does not
/// need it, so it goes now. Called with the lock held.
static int make_copy_visible(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    if (value <= c->copy_visible) return 0;
    int rc = sk_vk_flush(c, 0, error, len);
    c->copy_visible = value;
    return rc;
}

int sk_vk_copy_wait(sk_vk_context *c, uint64_t value, char *error, size_t len) {
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    if (value > c->copy_value) { sk_vk_set_error(error, len, "waiting for a copy that was never submitted"); rc = -1; }
    else rc = make_copy_visible(c, value, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sk_vk_buffer_host_sync(sk_vk_context *c, sk_vk_buffer *b, char *error, size_t len) {
    pthread_mutex_lock(&c->lock);
    int rc = wait_copy_timeline(c, b->last_copy, error, len);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sk_vk_upload(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { sk_vk_set_error(error, len, "upload past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    pthread_mutex_lock(&c->lock);
    c->counters.other_bytes_in += bytes;
    int rc = 0;
    if (b->mapped && b->last_use <= sk_vk_completed(c)) {
        // Nothing on the device touches the buffer: written in place.
        memcpy((char *)b->mapped + offset, src, bytes);
    } else {
        // Recorded into the batch, after what the batch already does with those bytes.
        sk_vk_buffer *stage;
        uint64_t at;
        rc = sk_vk_begin(c, error, len);
        if (rc == 0) rc = sk_vk_stage(c, bytes, &stage, &at, error, len);
        if (rc == 0) {
            memcpy((char *)stage->mapped + at, src, bytes);
            sk_range access = { .buffer = b->buffer, .lo = offset, .hi = offset + bytes, .write = 1 };
            sk_vk_hazard(c, &access, 1);
            VkBufferCopy region = { .srcOffset = at, .dstOffset = offset, .size = bytes };
            c->vkCmdCopyBuffer(c->rec, stage->buffer, b->buffer, 1, &region);
            b->last_use = c->timeline_value + 1;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sk_vk_download(sk_vk_context *c, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t len) {
    if (offset + bytes > b->size) { sk_vk_set_error(error, len, "download past the end of the buffer"); return -1; }
    if (bytes == 0) return 0;
    pthread_mutex_lock(&c->lock);
    c->counters.bytes_out += bytes;
    int rc = 0;
    if (b->mapped) {
        // The device finishes what it does with the buffer, and the copies into it; then the host
        // reads the mapping.
        rc = sk_vk_wait_compute(c, b->last_use, error, len);
        if (rc == 0) rc = wait_copy_timeline(c, b->last_copy, error, len);
        if (rc == 0) memcpy(dst, (char *)b->mapped + offset, bytes);
    } else {
        // Copied into cached host memory at the end of the batch (the host reads it at memory speed;
        // uncached reads are slow everywhere), then one wait.
        if (!c->readback || c->readback->size < bytes) {
            sk_vk_destroy_now(c, c->readback);  // idle: every readback is waited for
            c->readback = sk_vk_make_buffer(c, bytes, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                                            VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, 1, error, len);
            if (!c->readback) rc = -1;
        }
        // What is read back includes every copy into the buffer: the batch waits for them on the device.
        if (rc == 0) rc = make_copy_visible(c, b->last_copy, error, len);
        if (rc == 0) rc = sk_vk_begin(c, error, len);
        if (rc == 0) {
            sk_range accesses[2] = { { .buffer = b->buffer, .lo = offset, .hi = offset + bytes, .write = 0 },
                                     { .buffer = c->readback->buffer, .lo = 0, .hi = bytes, .write = 1 } };
            sk_vk_hazard(c, accesses, 2);
            VkBufferCopy region = { .srcOffset = offset, .dstOffset = 0, .size = bytes };
            c->vkCmdCopyBuffer(c->rec, b->buffer, c->readback->buffer, 1, &region);
            b->last_use = c->timeline_value + 1;
            rc = sk_vk_flush(c, 1, error, len);
        }
        if (rc == 0 && !c->readback->coherent) {
            // Cached but not coherent: the device's writes become visible to the host after an invalidate.
            VkMappedMemoryRange range = { .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE, .memory = c->readback->memory, .offset = 0, .size = VK_WHOLE_SIZE };
            rc = sk_vk_check(c->vkInvalidateMappedMemoryRanges(c->device, 1, &range), "vkInvalidateMappedMemoryRanges", error, len);
        }
        if (rc == 0) memcpy(dst, c->readback->mapped, bytes);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void sk_vk_get_counters(const sk_vk_context *c, sk_vk_counters *out) { *out = c->counters; }

#endif
