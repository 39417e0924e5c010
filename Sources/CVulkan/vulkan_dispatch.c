// SPIR-V kernels: pipelines built on first use, dispatched with push constants (CVulkan).
#include "sk_vulkan.h"
#if __has_include(<vulkan/vulkan.h>) && !defined(SK_FORCE_NO_VULKAN)
#include "vk_internal.h"
#include "spirv.inc"

static int ensure_pipeline(sk_vk_context *c, sk_vk_kernel k, char *error, size_t len) {
    if (c->pipelines[k]) return 0;
    static const uint32_t *code[SK_VK_KERNEL_COUNT] = { spirv_binary, spirv_unary, spirv_gemm, spirv_rows, spirv_rotary, spirv_upsample,
                                                         spirv_conv2d, spirv_copy, spirv_attention, spirv_gemm_tiled };
    static const size_t code_size[SK_VK_KERNEL_COUNT] = { sizeof spirv_binary, sizeof spirv_unary, sizeof spirv_gemm, sizeof spirv_rows,
                                                          sizeof spirv_rotary, sizeof spirv_upsample, sizeof spirv_conv2d, sizeof spirv_copy,
                                                          sizeof spirv_attention, sizeof spirv_gemm_tiled };
    VkDescriptorSetLayoutBinding bindings[8];
    for (uint32_t i = 0; i < kernel_buffers[k]; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){ .binding = i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                      .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo lci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                            .bindingCount = kernel_buffers[k], .pBindings = bindings };
    if (sk_vk_check(c->vkCreateDescriptorSetLayout(c->device, &lci, NULL, &c->layouts[k]), "vkCreateDescriptorSetLayout", error, len)) return -1;
    VkPushConstantRange range = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = 64 };
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                        .pSetLayouts = &c->layouts[k], .pushConstantRangeCount = 1, .pPushConstantRanges = &range };
    if (sk_vk_check(c->vkCreatePipelineLayout(c->device, &plci, NULL, &c->pipeline_layouts[k]), "vkCreatePipelineLayout", error, len)) return -1;
    VkShaderModuleCreateInfo smci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = code_size[k], .pCode = code[k] };
    VkShaderModule module;
    if (sk_vk_check(c->vkCreateShaderModule(c->device, &smci, NULL, &module), "vkCreateShaderModule", error, len)) return -1;
    VkComputePipelineCreateInfo cpci = { .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = module, .pName = "main" },
        .layout = c->pipeline_layouts[k] };
    int rc = sk_vk_check(c->vkCreateComputePipelines(c->device, VK_NULL_HANDLE, 1, &cpci, NULL, &c->pipelines[k]), "vkCreateComputePipelines", error, len);
    c->vkDestroyShaderModule(c->device, module, NULL);
    return rc;
}

int sk_vk_dispatch(sk_vk_context *c, sk_vk_kernel k, const sk_vk_binding *bindings, uint32_t count, const void *push, uint32_t push_bytes,
                   uint32_t gx, uint32_t gy, uint32_t gz, char *error, size_t len) {
    if (k >= SK_VK_KERNEL_COUNT || count != kernel_buffers[k] || push_bytes > 64) { sk_vk_set_error(error, len, "bad kernel arguments"); return -1; }
    uint64_t ranges[8];
    for (uint32_t i = 0; i < count; i++) {
        const sk_vk_binding *b = &bindings[i];
        char msg[240];
        if (b->offset >= b->buffer->size || b->offset % c->min_alignment != 0) {
            snprintf(msg, sizeof msg, "binding %u: offset %llu is outside the %llu-byte buffer or not a multiple of %llu", i,
                     (unsigned long long)b->offset, (unsigned long long)b->buffer->size, (unsigned long long)c->min_alignment);
            sk_vk_set_error(error, len, msg);
            return -1;
        }
        ranges[i] = b->range ? b->range : b->buffer->size - b->offset;
        if (ranges[i] > c->max_range || b->offset + ranges[i] > b->buffer->size) {
            snprintf(msg, sizeof msg, "binding %u: %llu bytes exceed the device's storage-buffer range of %llu bytes or the buffer", i,
                     (unsigned long long)ranges[i], (unsigned long long)c->max_range);
            sk_vk_set_error(error, len, msg);
            return -1;
        }
    }
    pthread_mutex_lock(&c->lock);
    int rc = ensure_pipeline(c, k, error, len);
    VkDescriptorSet set;
    if (rc == 0) rc = sk_vk_begin(c, error, len);
    if (rc == 0) rc = sk_vk_descriptor_set(c, c->layouts[k], &set, error, len);
    if (rc == 0) {
        VkDescriptorBufferInfo infos[8];
        VkWriteDescriptorSet writes[8];
        sk_range accesses[8];
        uint64_t value = c->timeline_value + 1;  // the batch's
        for (uint32_t i = 0; i < count; i++) {
            infos[i] = (VkDescriptorBufferInfo){ .buffer = bindings[i].buffer->buffer, .offset = bindings[i].offset, .range = ranges[i] };
            writes[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = i,
                                                .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = &infos[i] };
            // Every kernel writes its last binding and only reads the others.
            int write = i + 1 == count;
            accesses[i] = (sk_range){ .buffer = bindings[i].buffer->buffer, .lo = bindings[i].offset, .hi = bindings[i].offset + ranges[i], .write = write };
            bindings[i].buffer->last_use = value;
            sk_vk_trace_add(c, (sk_vk_trace_entry){ .kind = write, .buffer = bindings[i].buffer, .lo = accesses[i].lo, .hi = accesses[i].hi, .value = value });
        }
        c->vkUpdateDescriptorSets(c->device, count, writes, 0, NULL);
        sk_vk_hazard(c, accesses, count);
        c->vkCmdBindPipeline(c->rec, VK_PIPELINE_BIND_POINT_COMPUTE, c->pipelines[k]);
        c->vkCmdBindDescriptorSets(c->rec, VK_PIPELINE_BIND_POINT_COMPUTE, c->pipeline_layouts[k], 0, 1, &set, 0, NULL);
        uint8_t constants[64] = { 0 };
        memcpy(constants, push, push_bytes);
        c->vkCmdPushConstants(c->rec, c->pipeline_layouts[k], VK_SHADER_STAGE_COMPUTE_BIT, 0, 64, constants);
        c->vkCmdDispatch(c->rec, gx, gy, gz);
        c->dispatches[k]++;
        // The device starts on what is recorded while the host records on.
        if (++c->rec_dispatches >= SK_SUBMIT_EVERY) rc = sk_vk_flush(c, 0, error, len);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

#endif
